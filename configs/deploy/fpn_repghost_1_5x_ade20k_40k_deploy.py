# Former name of repghostnet/deploy/fpn_repghostnet-1.5x_8xb4-40k_ade20k-512x512_deploy.py, kept so that existing commands keep working.
_base_ = '../repghostnet/deploy/fpn_repghostnet-1.5x_8xb4-40k_ade20k-512x512_deploy.py'
