"""Pure-PyTorch backbones (no mm imports). One module per family."""
from .base import RepBackbone
from .zoo import BACKBONES, CLASSIFIERS, build_backbone, build_classifier
from .repghostnet import RepGhostNet, RepGhostNetClassifier
from .repghostnetv2 import MobileNetV4, MobileNetV4Classifier, RepGhostNetV2, RepGhostNetV2Classifier
from .repnext import RepNeXt, RepNeXtClassifier
from .repmobile import RepMobile, RepMobileClassifier
from .timm_backbone import TimmRepBackbone  # noqa: F401  (registers TimmRepBackbone)

__all__ = ['RepBackbone', 'BACKBONES', 'CLASSIFIERS', 'build_backbone', 'build_classifier',
           'RepGhostNet', 'RepGhostNetClassifier', 'RepGhostNetV2', 'RepGhostNetV2Classifier', 'MobileNetV4',
           'MobileNetV4Classifier', 'RepNeXt', 'RepNeXtClassifier', 'RepMobile', 'RepMobileClassifier']
