# Former name of repnext/deploy/fpn_repnext-m3_4xb4-80k_ade20k-512x512_deploy.py, kept so that existing commands keep working.
_base_ = '../repnext/deploy/fpn_repnext-m3_4xb4-80k_ade20k-512x512_deploy.py'
