# Former name of repghostnetv2/deploy/fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512_deploy.py, kept so that existing commands keep working.
_base_ = '../repghostnetv2/deploy/fpn_repghostnetv2-s_8xb4-40k_ade20k-512x512_deploy.py'
