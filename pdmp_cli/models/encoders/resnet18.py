"""torchvision's ResNet-18, trained from scratch as in the paper, conv1 adapted to the input."""

from torch import nn

from pdmp_cli.models.encoders import register_encoder
from pdmp_cli.models.encoders._frames import FrameFolding, Stages


class ResNet18Encoder(FrameFolding):
    def stages(self) -> Stages:
        net = self.backbone  # torchvision's layer1..layer4 are the stages (MMTM's positions)
        return Stages(
            stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
            blocks=(net.layer1, net.layer2, net.layer3, net.layer4),
            channels=(64, 128, 256, 512),
            head=nn.Sequential(net.avgpool, nn.Flatten()),
        )


@register_encoder("resnet18")
def build_resnet18(in_channels: int) -> nn.Module:
    # imported here, not at the top: torchvision.models pulls in torch._dynamo (~2.5 s of CPU),
    # and the registry is imported by every spec validation (a cached `pdmp analyze` builds no model)
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()  # features, not ImageNet logits: the fusion owns the head
    return ResNet18Encoder(net, out_dim=512)
