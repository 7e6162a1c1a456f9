import pytest
import torch

from unet_edge.errors import UnetEdgeError
from unet_edge.model import PRESETS, UNet, UNetConfig, config_from_preset, count_parameters


@pytest.mark.parametrize("hw", [(360, 480), (37, 53), (16, 16), (1, 7), (100, 33)])
def test_logits_have_input_size_for_any_hw(hw):
    model = UNet(UNetConfig(num_classes=5, base_channels=4, depth=4)).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, *hw))
    assert y.shape == (2, 5, *hw)
    assert y.dtype == torch.float32


def test_padding_does_not_change_interior_semantics():
    # A multiple-of-16 input and the same input with extra rows: logits at the top-left agree closely
    # away from the padded border, i.e. padding is applied at the bottom/right only.
    torch.manual_seed(0)
    model = UNet(UNetConfig(num_classes=2, base_channels=4, depth=2)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = model(x)
        b = model(torch.nn.functional.pad(x, (0, 0, 0, 3)))
    assert b.shape[-2:] == (35, 32)
    assert torch.allclose(a[..., :16, :16], b[..., :16, :16], atol=1e-5)


def test_binary_head_and_presets():
    m = UNet(config_from_preset("tiny", 1))
    assert m(torch.randn(1, 3, 24, 40)).shape == (1, 1, 24, 40)
    assert set(PRESETS) >= {"unet", "edge"}
    assert config_from_preset("unet", 11).base_channels == 64
    assert config_from_preset("edge", 11).base_channels == 16
    # the paper's widths: 64 -> 1024 at depth 4, ~31 M parameters
    assert 30e6 < count_parameters(UNet(config_from_preset("unet", 2))) < 32e6


def test_bad_config_raises():
    with pytest.raises(UnetEdgeError):
        config_from_preset("nope", 3)
    with pytest.raises(UnetEdgeError):
        UNet(UNetConfig(num_classes=0))


def test_dropout_config_roundtrip():
    cfg = UNetConfig(num_classes=3, dropout=0.2)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(UNet(cfg).dropout, torch.nn.Dropout2d)
