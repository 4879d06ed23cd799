# Former name of repmobile/fpn_repmobile-l_8xb4-40k_ade20k-512x512.py, kept so that existing commands keep working.
_base_ = './repmobile/fpn_repmobile-l_8xb4-40k_ade20k-512x512.py'
