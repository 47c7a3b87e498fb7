"""Small user factories for the inputs people bring besides images (benchmarks/torchvision_sweep.py).

One per kind: a 1-D conv net for keyword spotting (1 x 16000 audio), an MLP on flat
784-vectors, a Transformer encoder classifier on 32 token ids, a Conv3d net on a 1 x 8
x 16 x 16 clip, and an LSTM over 50 steps of 16 features.  The same nets as
tests/test_inputs_any_rank.py's.  ``FACTORIES``: name -> the scenario fields it needs.
"""
from __future__ import annotations

from torch import nn


def kws(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 8, 80, stride=16), nn.ReLU(), nn.Conv1d(8, 16, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, num_classes))


def mlp(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, num_classes))


class TinyText(nn.Module):
    def __init__(self, num_classes: int = 10, vocab: int = 1000, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def text(num_classes: int = 10) -> nn.Module:
    return TinyText(num_classes)


def clip(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


class TinyLSTM(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):  # noqa: ANN001, ANN201
        out, _ = self.lstm(x.view(x.shape[0], -1, 16))  # (B, 800) -> 50 steps of 16
        return self.fc(out[:, -1])


def lstm(num_classes: int = 10) -> nn.Module:
    return TinyLSTM(num_classes)


FACTORIES: dict[str, dict] = {
    "kws": {"input_size": (1, 16000)},
    "mlp": {"input_size": (784,)},
    "text": {"input_size": (32,), "input_dtype": "int64", "vocab": 1000},
    "clip": {"input_size": (1, 8, 16, 16)},
    "lstm": {"input_size": (800,)},
}
