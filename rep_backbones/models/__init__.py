"""Pure-PyTorch backbones (no mm imports). One module per family."""
from .base import RepBackbone
from .mobilenetv4 import MobileNetV4, MobileNetV4Classifier
from .registry import BACKBONES, CLASSIFIERS, build_backbone, build_classifier, family_specs
from .repghostnet import RepGhostNet, RepGhostNetClassifier
from .repghostnetv2 import RepGhostNetV2, RepGhostNetV2Classifier
from .repmobile import RepMobile, RepMobileClassifier
from .repnext import RepNeXt, RepNeXtClassifier
from .timm_backbone import TimmRepBackbone  # noqa: F401  (registers TimmRepBackbone)

__all__ = ['RepBackbone', 'BACKBONES', 'CLASSIFIERS', 'build_backbone', 'build_classifier', 'family_specs',
           'RepGhostNet', 'RepGhostNetClassifier', 'RepGhostNetV2', 'RepGhostNetV2Classifier', 'MobileNetV4',
           'MobileNetV4Classifier', 'RepNeXt', 'RepNeXtClassifier', 'RepMobile', 'RepMobileClassifier']
