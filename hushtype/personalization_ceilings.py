"""``hushtype bench personalization --ceilings``: how far each family of personal model can go.

Measured on the same held-out users' later lines as the adapter (``bench_personalization``), in one
run, each beside the released model alone, with the spread over users and the users helped:

- ``oracle_bias``: a vocabulary bias fitted on the user's *later* lines themselves (hindsight: it
  bounds every per-user bias u, including any the server could add under HE); per user, the best of
  a few fits (cross-entropy + l2, and the cache adapter of the later lines' statistics).
- ``finetune_head`` / ``finetune_model``: the whole head (``w2``, ``b2``) or the whole model
  fine-tuned on the user's earlier lines (Adam, full batch; lr and steps chosen on train users): the
  best non-private, non-HE personal model of this size.
- ``cache_lm``: a classical cache LM (Kuhn & De Mori 1990; Grave et al. 2017, "Improving neural
  language models with a continuous cache"): the model's probabilities interpolated with a unigram
  and a bigram cache of the user's earlier lines, ``p = (1 - l_u - l_b [prev seen]) p_model +
  l_u p_uni + l_b p_bi(. | prev)``, weights chosen on train users; ``cache_lm_unigram`` without the
  bigram (context free, but in probability space: not a logit bias the server could add).
- ``cache_adapter``: today's adapter (``keyboard_sim.personalize``); ``cache_adapter_per_sentence``:
  the same adapter kept up to date while the later lines are typed (an increment after every
  sentence), ``cache_adapter_per_word`` after every word (only a device can do that, locally).
- ``personal_vocab``: the user's own words outside the public vocabulary (``<unk>`` to the model):
  each seen on earlier lines is scored ``z_unk + offset + log q_w`` (q: its share of the user's
  out-of-vocabulary words; offset chosen on train users) beside the in-vocabulary logits.

Two metrics everywhere: ``top3`` over in-vocabulary targets (the adapter's metric) and ``top3_all``
over every target, where an out-of-vocabulary word is a hit only if a personal word suggests it.
Users' words are encoded through ``keyboard_sim.dataset.user_examples`` with the public vocabulary
extended by the user's own words (ids >= V), so the contexts are exactly the bench's.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch

from hushtype.adapter_settings import adapter_grid, running_statistics
from keyboard_sim.corpus import UserText, load_users
from keyboard_sim.dataset import DataConfig, release_data_config, user_examples
from keyboard_sim.device_cache import DeviceCacheConfig, mix_cache
from keyboard_sim.personalize import (
    CacheAdapterConfig,
    PersonalizationConfig,
    adapter_from_statistics,
    fit_bias_to_logits,
    softmax,
    user_statistics,
)
from keyboard_sim.split import local_split, split_users
from models.factory import build_model, load_weights, param_names
from models.release import load_release
from models.tokenizer import tokenize
from models.vocab import Vocabulary

__all__ = ["personalization_ceilings"]

_SPECIALS = (0, 1)  # <unk>, <s>: never suggested
CACHE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3)  # l_u and l_b grids (train users)
OFFSETS = (-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0)  # personal-word offset grid (train users)
FT_LRS = (1e-4, 3e-4, 1e-3)  # Adam learning rates for fine-tuning (train users)
FT_STEPS = (2, 5, 10, 20)  # checkpoints along one trajectory per lr


@dataclasses.dataclass
class _User:
    """One user's windows in extended ids (>= V: the user's own words) and the frozen model's logits."""

    vocab_size: int  # V, the public vocabulary
    n_personal: int  # P: ids V..V+P-1 are out-of-vocabulary words seen on earlier lines
    train_x: np.ndarray  # (m, k) model ids
    train_y: np.ndarray  # (m,) extended ids
    train_prev: np.ndarray  # (m,) extended id of the previous word
    train_logits: np.ndarray  # (m, V)
    later_x: np.ndarray
    later_y: np.ndarray
    later_prev: np.ndarray  # (n,) extended id of the previous word (<s> at a sentence start)
    later_logits: np.ndarray  # (n, V)

    def model_ids(self, y: np.ndarray) -> np.ndarray:
        """Extended ids -> the model's ids (own words -> <unk>)."""
        return np.where(y >= self.vocab_size, 0, y)


def _extended_vocab(vocab: Vocabulary, user: UserText, later_fraction: float) -> tuple[Vocabulary, int]:
    """The public vocabulary + the user's out-of-vocabulary words (earlier lines' first), and P."""
    earlier, later = local_split(user.lines, later_fraction)
    own = list(dict.fromkeys(w for line in earlier for w in tokenize(line) if w not in vocab))
    rest = list(dict.fromkeys(w for line in later for w in tokenize(line) if w not in vocab))
    extra = own + [w for w in rest if w not in set(own)]
    return Vocabulary(vocab.words + extra, source="extended"), len(own)


@torch.no_grad()
def _logits(model, x: np.ndarray) -> np.ndarray:
    return model(torch.from_numpy(x)).numpy() if len(x) else np.zeros((0, model.config.vocab_size))


def _encode(
    model, vocab: Vocabulary, users: list[UserText], config: DataConfig, cap: int | None
) -> list[_User]:
    out = []
    for text in users:
        ext, n_personal = _extended_vocab(vocab, text, config.split.later_fraction)
        ex = user_examples(text, ext, config.context, config.split.later_fraction, config.context_scope)
        if len(ex.train) < 20 or len(ex.later) < 10:
            continue
        v = len(vocab)
        tx, lx = np.where(ex.train.x >= v, 0, ex.train.x), np.where(ex.later.x >= v, 0, ex.later.x)
        out.append(
            _User(
                v,
                n_personal,
                tx,
                ex.train.y,
                ex.train.x[:, -1],
                _logits(model, tx),
                lx,
                ex.later.y,
                ex.later.x[:, -1],
                _logits(model, lx),
            )
        )
        if cap is not None and len(out) >= cap:
            break
    return out


def _top3(scores: np.ndarray, y: np.ndarray, vocab_size: int) -> tuple[float, float]:
    """(top-3 over in-vocabulary targets, top-3 over all targets) of ``scores`` (n, V + P)."""
    scores = scores.copy()
    scores[:, list(_SPECIALS)] = -np.inf
    top = np.argpartition(-scores, 3, axis=1)[:, :3]
    hit = (top == y[:, None]).any(axis=1)
    known = y < vocab_size
    return float(hit[known].mean()) if known.any() else float("nan"), float(hit.mean())


def _with_personal(user: _User, logits: np.ndarray, offset: float | None) -> np.ndarray:
    """``logits`` (n, V) extended by the user's own words: ``z_unk + offset + log q_w``, or -inf."""
    n = len(logits)
    own = np.full((n, user.n_personal), -np.inf)
    if offset is not None and user.n_personal:
        counts = np.bincount(
            user.train_y[user.train_y >= user.vocab_size] - user.vocab_size, minlength=user.n_personal
        )
        own = logits[:, :1] + offset + np.log(counts / counts.sum())[None, :]
    return np.concatenate([logits, own], axis=1)


def _score(user: _User, logits: np.ndarray, offset: float | None = None) -> tuple[float, float]:
    return _top3(_with_personal(user, logits, offset), user.later_y, user.vocab_size)


def _summary(base: np.ndarray, new: np.ndarray) -> dict:
    """Lift of ``new`` over ``base`` per user (columns: top3, top3_all), mean, stderr, users helped."""
    out = {}
    for col, name in enumerate(("top3", "top3_all")):
        b, n = base[:, col], new[:, col]
        ok = ~np.isnan(b) & ~np.isnan(n)
        lift = n[ok] - b[ok]
        stderr = float(lift.std(ddof=1) / np.sqrt(len(lift)))
        out[name] = float(n[ok].mean())
        out[f"{name}_lift_relative"] = float(lift.mean() / b[ok].mean())
        out[f"{name}_lift_relative_stderr"] = stderr / float(b[ok].mean())
        out[f"{name}_users_helped"] = int((lift > 0).sum())
        out[f"{name}_users_hurt"] = int((lift < 0).sum())
    return out


def _per_user(users: list[_User], method: Callable[[_User], tuple[float, float]]) -> np.ndarray:
    return np.array([method(u) for u in users])


# --- the families -------------------------------------------------------------------------------


def _base(user: _User) -> tuple[float, float]:
    return _score(user, user.later_logits)


def _in_vocab_top3(user: _User, logits: np.ndarray) -> tuple[float, float]:
    """Top-3 with the personal words absent (the in-vocabulary families), over extended targets."""
    return _score(user, logits)


def _oracle_bias(user: _User) -> tuple[float, float]:
    """Best in hindsight of a few biases fitted on the later lines themselves (per user, by top-3)."""
    y = user.model_ids(user.later_y)
    candidates = [
        fit_bias_to_logits(user.later_logits, y, PersonalizationConfig(steps=100, lr=0.1, l2=l2, max_abs=8.0))
        for l2 in (1e-3, 1e-2)
    ]
    counts, expected = user_statistics(user.later_logits, y)
    candidates += [
        adapter_from_statistics(counts, expected, CacheAdapterConfig(scale=s, prior=1.0)) for s in (0.5, 1.0)
    ]
    return max((_in_vocab_top3(user, user.later_logits + u) for u in candidates), key=lambda r: r[0])


def _trainable_copy(model, keys: tuple[str, ...]):
    """A copy of ``model`` (eval mode) whose only trainable parameters are ``keys``."""
    tuned = copy.deepcopy(model).eval()
    names = param_names(tuned)
    for p in tuned.parameters():
        p.requires_grad_(False)
    params = [tuned.get_parameter(names[k]) for k in keys]
    for p in params:
        p.requires_grad_(True)
    return tuned, params


@torch.no_grad()
def _head_inputs(model, x: np.ndarray) -> torch.Tensor:
    """(n, H) what the vocabulary projection (``w2``, ``b2``) reads: the head's activation."""
    proj = model.get_submodule(param_names(model)["w2"].rsplit(".", 1)[0])
    seen = []
    handle = proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    model(torch.from_numpy(x))
    handle.remove()
    return seen[0]


def _finetune_curve(model, user: _User, keys: tuple[str, ...], lr: float) -> list[np.ndarray]:
    """Later-line logits after each of ``FT_STEPS`` full-batch Adam steps on the earlier lines.

    Only the head (``w2``, ``b2``): on its cached inputs, the same function at a fraction of the cost."""
    y = torch.from_numpy(user.model_ids(user.train_y))
    if set(keys) == {"w2", "b2"}:
        names = param_names(model)
        w2, b2 = (model.get_parameter(names[k]).detach().clone().requires_grad_(True) for k in ("w2", "b2"))
        inputs, later = _head_inputs(model, user.train_x), _head_inputs(model, user.later_x)
        forward, params = (lambda a: a @ w2.T + b2), [w2, b2]
        x, later_fn = inputs, (lambda: forward(later))
    else:
        tuned, params = _trainable_copy(model, keys)
        forward, x = tuned, torch.from_numpy(user.train_x)
        later_fn = lambda: tuned(torch.from_numpy(user.later_x))  # noqa: E731
    opt = torch.optim.Adam(params, lr=lr)
    out = []
    for step in range(1, max(FT_STEPS) + 1):
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in FT_STEPS:
            with torch.no_grad():
                out.append(later_fn().numpy())
    return out


def _finetune(
    model, train: list[_User], heldout: list[_User], keys: tuple[str, ...]
) -> tuple[dict, np.ndarray]:
    """(chosen lr/steps, held-out per-user scores) of fine-tuning ``keys``, chosen on ``train``."""
    grid = {}
    for lr in FT_LRS:
        curves = [_finetune_curve(model, u, keys, lr) for u in train]
        for i, steps in enumerate(FT_STEPS):
            grid[(lr, steps)] = float(
                np.nanmean([_in_vocab_top3(u, c[i])[0] for u, c in zip(train, curves, strict=True)])
            )
    lr, steps = max(grid, key=grid.get)
    i = FT_STEPS.index(steps)
    scores = np.array([_in_vocab_top3(u, _finetune_curve(model, u, keys, lr)[i]) for u in heldout])
    return {"lr": lr, "steps": steps, "users": len(heldout)}, scores


def _cache_parts(user: _User) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p_model, unigram cache, bigram cache rows, prev seen) over V ids for the later lines."""
    size = user.vocab_size  # in-vocabulary words only: the user's own words are ``personal_vocab``'s
    p_model = softmax(user.later_logits)
    p_model[:, 0] = 0.0  # <unk> is never suggested: its mass is not a word
    y = user.model_ids(user.train_y)
    uni = np.bincount(y, minlength=size)[:size].astype(np.float64)
    uni /= uni.sum()
    pairs = Counter(zip(user.model_ids(user.train_prev).tolist(), y.tolist(), strict=True))
    by_prev: dict[int, Counter] = {}
    for (a, b), c in pairs.items():
        by_prev.setdefault(a, Counter())[b] = c
    rows = np.zeros((len(p_model), size))
    seen = np.zeros(len(p_model), dtype=bool)
    for t, a in enumerate(user.model_ids(user.later_prev).tolist()):
        if a in by_prev:
            seen[t] = True
            ids, counts = zip(*by_prev[a].items(), strict=True)
            rows[t, list(ids)] = np.asarray(counts) / sum(counts)
    return p_model, uni, rows, seen


def _cache_scores(parts, l_u: float, l_b: float) -> np.ndarray:
    p_model, uni, rows, seen = parts
    return np.log(mix_cache(p_model, uni, rows, seen, DeviceCacheConfig(l_u, l_b)) + 1e-30)


def _cache_lm(train: list[_User], heldout: list[_User]) -> list[tuple[dict, np.ndarray]]:
    """The cache LM with both caches, then with the unigram cache alone (weights chosen on train users)."""
    grid = [(a, b) for a, b in itertools.product(CACHE_WEIGHTS, CACHE_WEIGHTS) if a + b < 1]
    totals = np.zeros(len(grid))
    for user in train:
        parts = _cache_parts(user)
        totals += [_score(user, _cache_scores(parts, a, b))[0] for a, b in grid]
    unigram_only = [i for i, (_, b) in enumerate(grid) if b == 0]
    chosen = [grid[int(np.argmax(totals))], grid[max(unigram_only, key=lambda i: totals[i])]]
    out = []
    for l_u, l_b in chosen:
        scores = [_score(user, _cache_scores(_cache_parts(user), l_u, l_b)) for user in heldout]
        out.append(({"unigram_weight": l_u, "bigram_weight": l_b}, np.array(scores)))
    return out


def _cache_adapter(train: list[_User], heldout: list[_User]) -> tuple[dict, np.ndarray]:
    """Today's adapter (``keyboard_sim.personalize``), its scale and prior chosen on train users."""

    def scores(users: list[_User], config: CacheAdapterConfig) -> np.ndarray:
        out = []
        for u in users:
            counts, expected = user_statistics(u.train_logits, u.model_ids(u.train_y))
            out.append(_score(u, u.later_logits + adapter_from_statistics(counts, expected, config)))
        return np.array(out)

    best = max(adapter_grid(), key=lambda c: np.nanmean(scores(train, c)[:, 0]))
    return {"scale": best.scale, "prior": best.prior}, scores(heldout, best)


def _dynamic_scores(user: _User, config: CacheAdapterConfig, per_word: bool = False) -> tuple[float, float]:
    """The cache adapter kept up to date while the user types the later lines
    (``hushtype.adapter_settings.running_statistics``: an increment per sentence, or ``per_word``)."""
    counts0, expected0 = user_statistics(user.train_logits, user.model_ids(user.train_y))
    c, e = running_statistics(
        counts0, expected0, user.later_logits, user.model_ids(user.later_y), user.later_prev, per_word
    )
    return _score(user, user.later_logits + adapter_from_statistics(c, e, config))


def _cache_adapter_dynamic(train: list[_User], heldout: list[_User]) -> tuple[dict, np.ndarray, np.ndarray]:
    """(config chosen on train users, per-sentence scores, per-word scores) of the up-to-date adapter."""
    best = max(adapter_grid(), key=lambda c: np.nanmean([_dynamic_scores(u, c)[0] for u in train]))
    per_sentence = np.array([_dynamic_scores(u, best) for u in heldout])
    per_word = np.array([_dynamic_scores(u, best, per_word=True) for u in heldout])
    return {"scale": best.scale, "prior": best.prior}, per_sentence, per_word


def _personal_vocab(train: list[_User], heldout: list[_User]) -> tuple[dict, np.ndarray]:
    totals = {o: np.nanmean([_score(u, u.later_logits, o)[1] for u in train]) for o in OFFSETS}
    offset = max(totals, key=totals.get)
    return {"offset": offset}, np.array([_score(u, u.later_logits, offset) for u in heldout])


def personalization_ceilings(
    release_dir: str,
    data_config: DataConfig | None = None,
    *,
    max_train_users: int = 200,
    finetune_train_users: int = 10,
    finetune_heldout_users: int = 40,
    dynamic_train_users: int = 60,
    finetune: bool = True,
    max_heldout_users: int | None = None,
) -> dict:
    """Every family's top-3 lift on held-out users' later lines, one run (see the module docstring)."""
    release = load_release(release_dir)
    model = load_weights(build_model(release.config), release.weights).eval()
    config = release_data_config(release, data_config)  # the release's k and context scope
    split = split_users(load_users(config.source, config.jsonl_path, config.cache_dir), config.split)
    train = _encode(model, release.vocab, split.train, config, max_train_users)
    heldout = _encode(model, release.vocab, split.heldout, config, max_heldout_users)
    base = _per_user(heldout, _base)
    later = [t for u in heldout for t in u.later_y]
    result = {
        "users": len(heldout),
        "top3_base": float(np.nanmean(base[:, 0])),
        "top3_all_base": float(base[:, 1].mean()),
        "later_oov_share": float(np.mean([t >= heldout[0].vocab_size for t in later])),
        "later_oov_seen_earlier_share": float(
            np.mean([u.vocab_size <= t < u.vocab_size + u.n_personal for u in heldout for t in u.later_y])
        ),
    }
    start = time.perf_counter()

    def record(name: str, chosen: dict, scores: np.ndarray) -> None:
        result[name] = {**chosen, **_summary(base[: len(scores)], scores)}
        progress = {"ceiling": name, "top3_lift_relative": result[name]["top3_lift_relative"]}
        print(json.dumps({**progress, "seconds": time.perf_counter() - start}), file=sys.stderr, flush=True)

    record("oracle_bias", {}, _per_user(heldout, _oracle_bias))
    record("cache_adapter", *_cache_adapter(train, heldout))
    chosen, per_sentence, per_word = _cache_adapter_dynamic(train[:dynamic_train_users], heldout)
    record("cache_adapter_per_sentence", chosen, per_sentence)
    record("cache_adapter_per_word", chosen, per_word)
    both, unigram = _cache_lm(train, heldout)
    record("cache_lm", *both)
    record("cache_lm_unigram", *unigram)
    record("personal_vocab", *_personal_vocab(train, heldout))
    families = (("finetune_head", ("w2", "b2")), ("finetune_model", tuple(param_names(model))))
    for name, keys in families if finetune else ():
        record(name, *_finetune(model, train[:finetune_train_users], heldout[:finetune_heldout_users], keys))
    return result
