"""DPO family and WSPO losses against their formulas, invariances and gradient signs (pure torch, no Ray)."""

import math

import pytest
import torch

from rayflow.train.losses import dpo_loss, dpo_metrics, wspo_loss, wspo_metrics


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


@pytest.mark.parametrize("beta", [0.005, 0.1, 1.0, 100.0])
def test_policy_equal_to_reference_gives_ln2_and_zero_rewards(beta):
    pc, pr = t(-10.0, -3.0), t(-12.0, -7.5)
    loss = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=beta)
    assert torch.allclose(loss, torch.full((2,), math.log(2)), atol=1e-6)
    m = dpo_metrics(pc, pr, pc.clone(), pr.clone(), beta=beta)
    assert m["rewards/margins"].abs().max() == 0 and m["rewards/accuracies"].sum() == 0  # strict >


def test_known_value_and_gradient():
    pc = t(-10.0).requires_grad_()
    loss = dpo_loss(pc, t(-12.0), t(-11.0), t(-11.0), beta=0.1)
    assert loss.item() == pytest.approx(0.598139, abs=1e-6)
    loss.sum().backward()
    # dL/dh = -β σ(-βh); dh/dπc = 1
    assert pc.grad.item() == pytest.approx(-0.0450166, abs=1e-6)
    m = dpo_metrics(pc.detach(), t(-12.0), t(-11.0), t(-11.0), beta=0.1)
    assert m["h"].item() == pytest.approx(2.0) and m["rewards/chosen"].item() == pytest.approx(0.1)
    assert m["rewards/rejected"].item() == pytest.approx(-0.1) and m["rewards/accuracies"].item() == 1.0


def test_gradient_signs_at_init_and_one_step_raises_h():
    pc, pr = t(-5.0).requires_grad_(), t(-6.0).requires_grad_()
    loss = dpo_loss(pc, pr, t(-5.0), t(-6.0), beta=0.2)
    loss.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.1) and pr.grad.item() == pytest.approx(0.1)  # ±β/2
    with torch.no_grad():
        new_pc, new_pr = pc - 1.0 * pc.grad, pr - 1.0 * pr.grad
    assert dpo_metrics(new_pc, new_pr, t(-5.0), t(-6.0), beta=0.2)["h"].item() > 0


@pytest.mark.parametrize(
    "loss_type,eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.1)]
)
def test_constant_reference_shift_leaves_loss_unchanged(loss_type, eps):
    pc, pr, rc, rr = t(-4.0, -9.0), t(-6.0, -8.5), t(-5.0, -9.5), t(-5.5, -8.0)
    base = dpo_loss(pc, pr, rc, rr, beta=0.3, loss_type=loss_type, label_smoothing=eps)
    shifted = dpo_loss(pc, pr, rc + 17.0, rr + 17.0, beta=0.3, loss_type=loss_type, label_smoothing=eps)
    assert torch.allclose(base, shifted, atol=1e-5)


def test_each_loss_type_matches_its_formula():
    pc, pr, rc, rr = t(-4.0), t(-6.0), t(-5.0), t(-5.5)
    h, beta = (-4.0 + 5.0) - (-6.0 + 5.5), 0.5  # 1.5
    ls = lambda x: -math.log1p(math.exp(-x))  # log σ(x)
    assert dpo_loss(
        pc, pr, rc, rr, beta=beta, loss_type="sigmoid", label_smoothing=0.1
    ).item() == pytest.approx(-0.9 * ls(beta * h) - 0.1 * ls(-beta * h), abs=1e-6)
    assert dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="hinge").item() == pytest.approx(
        max(0, 1 - beta * h)
    )
    assert dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="ipo").item() == pytest.approx(
        (h - 1 / (2 * beta)) ** 2
    )
    assert dpo_loss(
        pc, pr, rc, rr, beta=beta, loss_type="robust", label_smoothing=0.2
    ).item() == pytest.approx((-0.8 * ls(beta * h) + 0.2 * ls(-beta * h)) / 0.6, abs=1e-6)
    # robust and cDPO both reduce to plain DPO at ε = 0
    plain = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="robust"), plain)


def test_posterior_is_dpo_with_zero_reference():
    pc, pr = t(-4.0, -2.0), t(-6.0, -1.0)
    z = torch.zeros(2)
    assert torch.allclose(
        dpo_loss(pc, pr, z, z, beta=10.0), -torch.nn.functional.logsigmoid(10.0 * (pc - pr))
    )


def test_bad_arguments_are_named():
    x = t(-1.0)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="sigmoid and robust only"):
        dpo_loss(x, x, x, x, beta=0.1, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        dpo_loss(x, x, x, x, beta=0.1, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, beta=0.1, loss_type="kto")


# --- WSPO ------------------------------------------------------------------------------------------------


def _wspo_inputs(seed=0, b=3, n=6):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, :2] = False  # prompt positions
    mask[1, 4:] = False  # padding
    mk = lambda: -torch.rand(b, n, generator=g) * 5
    return mk(), mk(), mk(), mask


def test_wspo_zero_with_zero_gradient_when_weak_models_agree_at_init():
    ref, weak, _, mask = _wspo_inputs()
    policy = ref.clone().requires_grad_()
    for form in ("token", "sequence"):
        loss = wspo_loss(policy, ref, weak, weak.clone(), mask, gamma=0.1, form=form)
        assert torch.equal(loss, torch.zeros(3))
        loss.sum().backward()
        assert torch.equal(policy.grad, torch.zeros_like(policy))
        policy.grad = None


def test_wspo_gradient_at_init_is_minus_2_gamma_delta_w_over_length():
    ref, wa, wb, mask = _wspo_inputs(1)
    policy = ref.clone().requires_grad_()
    gamma = 0.5
    wspo_loss(policy, ref, wa, wb, mask, gamma=gamma).sum().backward()
    expected = torch.where(mask, -2 * gamma * (wa - wb) / mask.sum(-1, keepdim=True), torch.zeros(()))
    assert torch.allclose(policy.grad, expected, atol=1e-6)


def test_wspo_formulas_masking_and_empty_rows():
    ref, wa, wb, mask = _wspo_inputs(2)
    policy = ref + 0.3
    mask[2] = False  # an empty row
    wa_nan = wa.clone()
    wa_nan[~mask] = float("nan")  # masked positions never leak
    tok = wspo_loss(policy, ref, wa_nan, wb, mask, gamma=2.0, form="token")
    seq = wspo_loss(policy, ref, wa_nan, wb, mask, gamma=2.0, form="sequence")
    for row in range(2):
        m = mask[row]
        ds, dw = (policy - ref)[row][m], (wa - wb)[row][m]
        assert tok[row].item() == pytest.approx(((2.0 * ds - dw) ** 2).mean().item(), abs=1e-5)
        assert seq[row].item() == pytest.approx((2.0 * ds.mean() - dw.mean()).item() ** 2, abs=1e-5)
    assert tok[2].item() == 0.0 and seq[2].item() == 0.0
    assert torch.isfinite(tok).all() and torch.isfinite(seq).all()


def test_wspo_zero_when_strong_is_weak_and_gamma_one():
    _, wa, wb, mask = _wspo_inputs(3)
    assert torch.equal(wspo_loss(wa, wb, wa, wb, mask, gamma=1.0), torch.zeros(3))


def test_wspo_training_reaches_delta_s_equal_delta_w_over_gamma():
    """A toy strong model (free logits per position over a small vocabulary) trained with WSPO lands on
    Δs = Δw/γ for the response tokens, amplifying the weak shift when γ < 1; pair preferences follow."""
    torch.manual_seed(0)
    b, n, vocab, gamma = 4, 5, 7, 0.5
    tokens = torch.randint(0, vocab, (b, n))
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, 0] = False
    gather = lambda logits: logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    ref_logits = torch.randn(b, n, vocab)
    weak_base = gather(torch.randn(b, n, vocab))
    weak_aligned = weak_base + 0.3 * torch.randn(b, n).clamp(-1, 1)  # a modest weak alignment shift
    ref = gather(ref_logits)
    logits = ref_logits.clone().requires_grad_()
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        wspo_loss(gather(logits), ref, weak_aligned, weak_base, mask, gamma=gamma).mean().backward()
        opt.step()
    m = wspo_metrics(gather(logits), ref, weak_aligned, weak_base, mask, gamma=gamma)
    delta_s = (gather(logits) - ref)[mask]
    delta_w = (weak_aligned - weak_base)[mask]
    assert torch.allclose(delta_s, delta_w / gamma, atol=1e-3)
    assert m["wspo/scaled_gap"].abs().max() < 1e-3
    assert (delta_s.abs() > delta_w.abs()).all()  # γ < 1 amplifies
