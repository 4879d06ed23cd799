# Former name of mobilenetv4/fpn_mobilenetv4-l_8xb4-40k_ade20k-512x512.py, kept so that existing commands keep working.
_base_ = './mobilenetv4/fpn_mobilenetv4-l_8xb4-40k_ade20k-512x512.py'
