# Former name of repmobile/deploy/fpn_repmobile-l_8xb4-40k_ade20k-512x512_deploy.py, kept so that existing commands keep working.
_base_ = '../repmobile/deploy/fpn_repmobile-l_8xb4-40k_ade20k-512x512_deploy.py'
