"""The spec's wrappers are a contract with existing DDO scripts: the paper's ``DenoisingDiffusion.model``
calls its network by keyword, ``model(x=x, temp=temp, v=v, level=level)``, and the spec's patch forwards
the context kwargs beside them. Every wrapper must take that call, and the spec's two must also take
``(x, temp, v, context_image)`` by position."""
import pytest
import torch

from ddo.diffusion import BlurringDiffusion, DenoisingDiffusion
from ddo.models import coordinate_grid
from ddo.models.fno_unet import FNOUNet2d
from ddo_conditional.nn.conditional_model import ConditionalDDOModel, ConditionalDDOModelSimple, ConditionalLiftModel
from ddo_conditional.classical.thin_plate import point_context
from ddo_conditional.nn.encoders import SetConvEncoder
from ddo_conditional.nn.refiners import PointSetModel, SparseInterpModel

B, C, RES = 2, 3, 8


class PaperStyleDiffusion:
    """The network calls of the reference ``DenoisingDiffusion`` with the spec's ``**kwargs`` patch: the
    time passed as ``temp=s.view(-1)`` and every argument by keyword."""

    def __init__(self, model):
        self._model = model

    def model(self, x, temp, v=None, level=None, **kwargs):
        return self._model(x=x, temp=temp, v=v, level=level, **kwargs)

    def epsilon(self, y, s, v=None, level=None, **kwargs):
        return self.model(x=y, temp=s.view(-1), v=v, level=level, **kwargs)


def _base(seed=0):
    torch.manual_seed(seed)
    return FNOUNet2d(4, 4, C, ch=8, ch_mult=(1, 2), num_res_blocks=1, use_pos=True, norm="group")


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, C, RES, RES, generator=g)
    mask = (torch.rand(B, 1, RES, RES, generator=g) < 0.2).float()
    context = torch.randn(B, C, RES, RES, generator=g) * mask
    return x, torch.rand(B, generator=g), coordinate_grid(B, RES, RES), context, mask


def _perturbed(model):
    with torch.no_grad():  # away from the zero initialisations, so every input reaches the output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("make", [lambda: ConditionalDDOModel(_base(), input_dim=C, context_feature_dim=8),
                                  lambda: ConditionalDDOModelSimple(_base(), input_dim=C)],
                         ids=["ConditionalDDOModel", "ConditionalDDOModelSimple"])
def test_spec_wrappers_take_the_papers_call_by_keyword_and_by_position(make):
    model = _perturbed(make())
    x, t, v, context, _ = _inputs()
    paper = PaperStyleDiffusion(model)
    with torch.no_grad():
        by_keyword = paper.epsilon(x, t, v=v, context_image=context)
        by_position = model(x, t, v, context)
        host_call = model(x, t, v, context_image=context)   # how ddo's DenoisingDiffusion calls it
        unconditioned = paper.epsilon(x, t, v=v)
        base_alone = model.base_model(x, t, v)
    assert by_keyword.shape == (B, C, RES, RES)
    torch.testing.assert_close(by_keyword, by_position, rtol=0, atol=0)
    torch.testing.assert_close(by_keyword, host_call, rtol=0, atol=0)
    torch.testing.assert_close(unconditioned, base_alone, rtol=0, atol=0)
    assert (by_keyword - unconditioned).abs().max() > 1e-4  # the context reached the output


def test_the_other_wrappers_take_the_papers_keywords():
    x, t, v, context, mask = _inputs()
    lift = _perturbed(ConditionalLiftModel(_base(), input_dim=C))
    interp = _perturbed(SparseInterpModel(_base(), input_dim=C, residual=True))
    with torch.no_grad():
        for model in (lift, interp):
            paper = PaperStyleDiffusion(model)
            out = paper.epsilon(x, t, v=v, context_image=context, observation_mask=mask)
            torch.testing.assert_close(out, model(x, t, v, context_image=context, observation_mask=mask),
                                       rtol=0, atol=0)
            torch.testing.assert_close(paper.epsilon(x, t, v=v), model.base_model(x, t, v), rtol=0, atol=0)

    g = torch.Generator().manual_seed(2)
    coords, values = torch.rand(B, 12, 2, generator=g), torch.rand(B, 12, C, generator=g) * 2 - 1
    points = point_context(coords, values, torch.ones(B, 12, dtype=torch.bool), RES, RES)
    point_model = _perturbed(PointSetModel(_base(), SetConvEncoder(C, 8, base_resolution=RES), 8, input_dim=C,
                                           residual=True))
    with torch.no_grad():
        out = PaperStyleDiffusion(point_model).epsilon(x, t, v=v, **points)
        torch.testing.assert_close(out, point_model(x, t, v, **points), rtol=0, atol=0)
    assert out.shape == (B, C, RES, RES) and torch.isfinite(out).all()


def test_host_network_accepts_level_and_still_refuses_unknown_keywords():
    net = _base().eval()
    x, t, v, context, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(x=x, temp=t, v=v, level=None), net(x, t, v), rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['context_image'\]"):
        net(x, t, v, context_image=context)


def test_host_sampling_drives_a_spec_wrapper_through_its_keywords():
    """ddo's own DenoisingDiffusion forwards the context to the spec's wrapper on every path."""
    model = _perturbed(ConditionalDDOModel(_base(), input_dim=C, context_feature_dim=8))
    gen_sde = DenoisingDiffusion(BlurringDiffusion(dim=2, ch=C), model)
    x, t, v, context, _ = _inputs()
    with torch.no_grad():
        eps = gen_sde.epsilon(x, t, v, context_image=context)
        direct = PaperStyleDiffusion(model).epsilon(x, t, v=v, context_image=context)
    torch.testing.assert_close(eps, direct, rtol=0, atol=0)
