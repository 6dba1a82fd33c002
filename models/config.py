"""The shape of every next-word model: one ``ModelConfig``, selected by ``kind``.

Every model is split at the encryption boundary (see DESIGN.md, "Model"):

    encoder (device, plaintext):  k word ids -> h                 (H,)   any network
    head    (server, on CKKS):    z = W2 (h * (h + beta)) + b2 + u  (V,)   depth 2

``kind`` picks the encoder: ``"nplm"`` (Bengio et al. 2003: concatenated embeddings -> one
linear layer), ``"mlp"`` (embeddings -> GELU layers with residuals -> LayerNorm) or ``"lstm"``
(embeddings -> Opacus' ``DPLSTM`` -> LayerNorm). The head is the same for all three, so the
encrypted circuit (``ckks.nplm_circuit``, mode "h") serves any of them at the same HE cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["KINDS", "SHIPPED_KIND", "ModelConfig", "TrainConfig", "shipped_model_config"]

KINDS = ("nplm", "mlp", "lstm")
SHIPPED_KIND = "lstm"  # what `hushtype bench quality` / `pretrain` train and release by default


@dataclass
class ModelConfig:
    """Shape and activation of the next-word model (fields a kind does not use are ignored)."""

    vocab_size: int = 4096  # = slots of one CKKS ciphertext at N=8192: logits fit one ciphertext
    context: int = 4  # k previous words the model sees
    embed_dim: int = 64  # d; the NPLM's server-side (mode "x") input width is context * embed_dim = 256
    hidden: int = 256  # H, the encoder -> head interface: the encrypted h; a power of two for the matvec
    beta: float = 1.0  # head activation a = h * (h + beta); fixed, not learned, so the HE circuit is static
    dropout: float = 0.1  # on the head's activation (and inside mlp/lstm encoders) during training only
    kind: str = "nplm"  # "nplm" | "mlp" | "lstm": the encoder; the default keeps old model cards loading
    width: int = 512  # inner width of the mlp/lstm encoder (device-side only: no HE limit)
    layers: int = 2  # mlp: GELU layers; lstm: stacked LSTM layers

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "embed_dim", "hidden", "width", "layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.kind not in KINDS:
            raise ValueError(f"ModelConfig.kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def input_dim(self) -> int:
        """Width of the concatenated context embedding (the NPLM's mode-"x" server input)."""
        return self.context * self.embed_dim

    def to_dict(self) -> dict:
        """Plain-dict form for model cards and checkpoints."""
        return asdict(self)


def shipped_model_config(vocab_size: int, kind: str = SHIPPED_KIND) -> ModelConfig:
    """The released model's shape for ``kind`` (the one source of the shipped hyper-parameters)."""
    if kind == "nplm":
        return ModelConfig(vocab_size=vocab_size, context=4, kind="nplm")
    # embed_dim 128 (not 64): valid top-1 0.107 vs 0.103 after 0.4 epoch; width 384 added nothing (0.108)
    return ModelConfig(
        vocab_size=vocab_size, context=8, embed_dim=128, kind=kind, width=256, layers=1, dropout=0.1
    )


@dataclass(frozen=True)
class TrainConfig:
    """The central training recipe (``models.train.train_central``) that ``bench quality`` and
    ``pretrain`` run for the shipped kind; its defaults are the shipped values."""

    lr: float = 3e-3  # AdamW peak, cosine decay to 10%
    batch_size: int = 512  # targets per step
    weight_decay: float = 0.0  # AdamW's decoupled decay
    ema: float = 0.999  # decay of the weights' moving average (0: off); ~1 epoch of steps on Shakespeare
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size <= 0:
            raise ValueError(
                f"TrainConfig.lr and batch_size must be positive, got {self.lr}, {self.batch_size}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"TrainConfig.ema must be in [0, 1), got {self.ema}")
        if self.weight_decay < 0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("TrainConfig.weight_decay must be >= 0 and label_smoothing in [0, 1)")

    def fit_kwargs(self) -> dict:
        """Keyword arguments of ``train_central``."""
        return asdict(self)
