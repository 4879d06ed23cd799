# Former name of repnext/fpn_repnext-m3_4xb4-80k_ade20k-512x512.py, kept so that existing commands keep working.
_base_ = './repnext/fpn_repnext-m3_4xb4-80k_ade20k-512x512.py'
