"""Old names of :func:`rep_backbones.fusion.official_fused` and :class:`~rep_backbones.fusion.NoOfficialForm`."""
from ..fusion import NoOfficialForm as NoUpstreamForm  # noqa: F401
from ..fusion import official_fused as upstream_fused  # noqa: F401
