# Former name of repghostnet/fpn_repghostnet-1.3x_8xb4-40k_ade20k-512x512.py, kept so that existing commands keep working.
_base_ = './repghostnet/fpn_repghostnet-1.3x_8xb4-40k_ade20k-512x512.py'
