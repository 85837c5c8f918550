"""A compact CNN (~0.3 M parameters) fast enough for CPU work and tests.

Three conv blocks, then a 4x4 average pool and a linear layer: unlike a global pool this keeps
coarse position, so where a cue sits (a spectrogram's frequency band) can be learned.
"""

from torch import nn

from pdmp_cli.models.encoders import register_encoder
from pdmp_cli.models.encoders._frames import FrameFolding, Stages


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallEncoder(FrameFolding):
    def stages(self) -> Stages:
        net = self.backbone  # the three conv blocks are the stages; pool + linear is the head
        return Stages(stem=nn.Identity(), blocks=tuple(net[:3]), channels=tuple(b[0].out_channels for b in net[:3]), head=net[3:])


@register_encoder("small")
def build_small(in_channels: int, width: int = 16, out_dim: int = 128) -> nn.Module:
    net = nn.Sequential(
        _block(in_channels, width),
        _block(width, width * 2),
        _block(width * 2, width * 4),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(width * 4 * 16, out_dim),
        nn.ReLU(inplace=True),
    )
    return SmallEncoder(net, out_dim=out_dim)
