"""The README's tour, runnable: convert a model, record its error terms, audit its backward.

    python examples/quick_tour.py
"""

import torch
from torch import nn

import manual_backprop

torch.manual_seed(0)

# An ordinary PyTorch model...
model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

# ...swapped, in place, to layers whose backward is the chain rule written out.
manual_backprop.convert(model, strict=True)
manual_backprop.convert(loss_fn)

x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
with manual_backprop.record_error_terms(model) as rec:
    loss = loss_fn(model(x), y)
    audit = manual_backprop.audit_backward(loss)  # runs loss.backward() and checks what ran
optimizer.step()  # the optimizer built before convert() still holds the same parameters

print(audit)
for path, delta in rec.items():
    print(f"δ at layer {path} ({type(model[int(path)]).__name__} output): shape {tuple(delta.shape)}, "
          f"RMS {delta.pow(2).mean().sqrt():.2e}")
