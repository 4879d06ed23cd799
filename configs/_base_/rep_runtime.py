# Shared by every config of rep_backbones: register the package and its hooks.
# RepFuseHook tests the fused (deploy) form of the backbone, checked against the training form on
# the first batch; SafeCheckpointHook keeps the written checkpoints loadable with weights_only=True.
custom_imports = dict(imports=['rep_backbones'], allow_failed_imports=False)
custom_hooks = [dict(type='RepFuseHook'), dict(type='SafeCheckpointHook')]
