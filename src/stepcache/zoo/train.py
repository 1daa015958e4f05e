"""Train zoo models into the package's models folder: ``python -m stepcache.zoo.train NAME``.

NAME is a diffusion model (dit-digits, pixart-shapes, unet-shapes), a classifier
(classifier-digits, classifier-shapes) or ``all``. Seeds are fixed and training
runs on one CPU thread so that results are reproducible; the measured time is
written to ``train_info.json`` next to the weights.
"""

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F

from . import data, nets, registry

LABEL_DROPOUT = 0.1  # fraction of samples trained unconditionally, for classifier-free guidance
EMA_DECAY = 0.995  # ~200-step horizon: longer averages drag in early weights of these short runs
WARMUP_STEPS = 100
CLASSIFIER_STEPS = {"digits": 1500, "shapes": 500, "moving-shapes": 10000}  # shapes: easier, 16x larger; clips: small shapes
CLASSIFIERS = tuple(f"classifier-{d}" for d in data.DATASETS)


def train_diffusion(spec: registry.ZooModel) -> dict:
    """Train one diffusion model; return its training log (weights are written to ``spec.path``)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images, labels = data.load_dataset(spec.dataset, "train")
    images = images * 2 - 1  # models work in [-1, 1]
    if images.ndim == 5:
        images = images.transpose(1, 2)  # videos (N, F, C, H, W) -> the video transformer's (N, C, F, H, W)
    denoiser = spec.build()
    modules = {spec.denoiser_attr: denoiser, "scheduler": nets.training_scheduler(spec.prediction_type)}
    if spec.captioned:
        modules["text_encoder"] = spec.build_text_encoder()
    pipe = spec.pipeline_cls(**modules)
    ema = copy.deepcopy(pipe)
    _disable_builtin_label_dropout(denoiser)
    condition = _condition_fn(pipe, spec)
    params = [p for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    pipe.denoiser.train()
    losses, start = [], time.perf_counter()
    for step in range(spec.train_steps):
        idx = torch.randint(0, len(images), (spec.batch_size,), generator=gen)
        x0, drop = images[idx], torch.rand(spec.batch_size, generator=gen) < LABEL_DROPOUT
        noise = torch.randn(x0.shape, generator=gen)
        t = _timesteps(pipe.scheduler.config.num_train_timesteps, spec, gen)
        noisy = pipe.scheduler.add_noise(x0, noise, t)
        prediction = pipe.denoise(noisy, t, condition(labels[idx], drop))
        if spec.prediction_type == "v_prediction":
            loss = velocity_loss(prediction, pipe.scheduler.get_velocity(x0, noise, t), pipe.scheduler, t,
                                 spec.min_snr_gamma)
        else:
            loss = noise_loss(prediction, noise, pipe.scheduler, t, spec.min_snr_gamma)
        _set_lr(opt, spec.lr * _lr_factor(step, spec.train_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ema_update(ema, pipe, min(EMA_DECAY, (1 + step) / (10 + step)))
        losses.append(loss.item())
        if step % 100 == 0 or step == spec.train_steps - 1:
            print(f"{spec.name} step {step} loss {sum(losses[-100:]) / len(losses[-100:]):.4f}", flush=True)
    seconds = time.perf_counter() - start
    _save_pipeline(ema, spec.path)
    return {
        "steps": spec.train_steps,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "ema_decay": EMA_DECAY,
        "label_dropout": LABEL_DROPOUT,
        "min_snr_gamma": spec.min_snr_gamma,
        "prediction_type": spec.prediction_type,
        "timestep_power": spec.timestep_power,
        "final_loss": sum(losses[-100:]) / len(losses[-100:]),
        "parameters": sum(p.numel() for p in denoiser.parameters()),
        "train_seconds": round(seconds, 1),
    }


def _timesteps(num_train_timesteps: int, spec: registry.ZooModel, gen: torch.Generator) -> torch.Tensor:
    """A batch of training timesteps, uniform or with density proportional to t ** ``spec.timestep_power``."""
    if spec.timestep_power == 0:
        return torch.randint(0, num_train_timesteps, (spec.batch_size,), generator=gen)
    u = torch.rand(spec.batch_size, generator=gen)  # inverse CDF of density ~ t ** p on [0, 1) is u ** (1 / (p + 1))
    return (num_train_timesteps * u ** (1 / (spec.timestep_power + 1))).long().clamp(max=num_train_timesteps - 1)


def _condition_fn(pipe, spec: registry.ZooModel):
    """Map (labels, drop mask) to the denoiser's condition batch; dropped samples get the null condition."""
    if not spec.captioned:
        null = pipe.transformer.config.num_embeds_ada_norm  # diffusers' DiT null-class index
        return lambda labels, drop: torch.where(drop, null, labels)
    captions = [data.caption(i, spec.dataset) for i in range(data.num_classes(spec.dataset))]
    token_ids = pipe.text_encoder.tokenize(captions)
    # Token id 0 is padding, so an all-zero row is exactly the empty caption "".
    return lambda labels, drop: pipe.text_encoder(token_ids[labels] * (~drop)[:, None])


def noise_loss(prediction, noise, scheduler, t: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
    """Noise-prediction MSE, plain or Min-SNR-gamma weighted per sample (Hang et al. 2023, arXiv 2303.09556).

    The plain MSE is dominated by nearly clean timesteps, where the small noise is hard to
    predict; Min-SNR caps their weight at gamma / SNR (noisier samples keep weight 1).
    """
    return _mse(prediction, noise, scheduler, t, min_snr_gamma, velocity=False)


def velocity_loss(prediction, velocity, scheduler, t: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
    """Velocity-prediction MSE, plain or with Min-SNR-gamma's weights for v, min(SNR, gamma) / (SNR + 1).

    Plain, it weighs each sample's x0 error by SNR + 1 where the noise MSE weighs it by SNR: the
    noisiest steps, where a sample's layout (a video's motion) is decided, count about 1000x more.
    Min-SNR's weights make it the same as Min-SNR on the noise.
    """
    return _mse(prediction, velocity, scheduler, t, min_snr_gamma, velocity=True)


def _mse(prediction, target, scheduler, t: torch.Tensor, min_snr_gamma: float | None, velocity: bool) -> torch.Tensor:
    if min_snr_gamma is None:
        return F.mse_loss(prediction, target)  # exactly how the recipes without gamma were trained
    alphas_cumprod = scheduler.alphas_cumprod[t]
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = snr.clamp(max=min_snr_gamma) / (snr + 1 if velocity else snr)
    per_sample = (prediction - target).pow(2).mean(dim=tuple(range(1, prediction.ndim)))
    return (per_sample * weights).mean()


def _disable_builtin_label_dropout(model: torch.nn.Module) -> None:
    # diffusers' DiT drops labels inside every block independently while training;
    # we drop once per sample instead so all blocks agree on the null class.
    for module in model.modules():
        if isinstance(module, diffusers.models.embeddings.LabelEmbedding):
            module.dropout_prob = 0.0


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    return 0.5 * (1 + math.cos(math.pi * (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


@torch.no_grad()
def _ema_update(ema, pipe, decay: float) -> None:
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            for e, p in zip(getattr(ema, name).parameters(), module.parameters()):
                e.lerp_(p, 1 - decay)


def _save_pipeline(pipe, path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            module.save_pretrained(path / name)
    nets.sampling_scheduler(pipe.scheduler.config.prediction_type).save_pretrained(path / "scheduler")


def train_classifier(dataset: str) -> dict:
    """Train the scoring CNN of ``dataset`` on its train split (with small shifts and noise for robustness)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images, labels = data.load_dataset(dataset, "train")
    # videos (N, F, C, H, W): the classifier reads the frames stacked as channels
    model = nets.SmallClassifier(in_channels=math.prod(images.shape[1:-2]), num_classes=data.num_classes(dataset))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for step in range(CLASSIFIER_STEPS[dataset]):
        idx = torch.randint(0, len(images), (128,), generator=gen)
        shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
        x = torch.roll(images[idx], shifts=shift, dims=(-2, -1))
        x = (x + 0.03 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        loss = F.cross_entropy(model(x), labels[idx])
        _set_lr(opt, 1e-3 * _lr_factor(step, CLASSIFIER_STEPS[dataset]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    test_x, test_y = data.load_dataset(dataset, "test")
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    path = registry.classifier_path(dataset)
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)
    return {"steps": CLASSIFIER_STEPS[dataset], "test_accuracy": accuracy, "train_seconds": round(seconds, 1)}


def train(name: str) -> dict:
    """Train ``name`` and write its ``train_info.json``."""
    # a fixed thread count keeps reruns reproducible; one thread leaves the other core free
    if name in CLASSIFIERS:
        torch.set_num_threads(1)
        dataset = name.removeprefix("classifier-")
        info, path = train_classifier(dataset), registry.classifier_path(dataset)
    else:
        spec = registry.get(name)
        torch.set_num_threads(spec.train_threads)
        info, path = train_diffusion(spec), spec.path
    info.update(torch=torch.__version__, diffusers=diffusers.__version__, threads=torch.get_num_threads())
    (path / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({name: info}, indent=2))
    return info


def main() -> None:
    names = [*CLASSIFIERS, *registry.MODELS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*names, "all"])
    args = parser.parse_args()
    for name in names if args.name == "all" else [args.name]:
        train(name)


if __name__ == "__main__":
    main()
