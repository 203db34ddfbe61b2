"""Your own data: train on a CSV file by naming its columns, with manual backprop.

    python examples/your_own_csv.py                   # the shipped Iris table, 30 epochs, a few seconds
    python examples/your_own_csv.py --small           # 20 steps
    python examples/your_own_csv.py --csv my.csv --target price --task regression --features area rooms

The shipped table, ``examples/data/iris.csv``, is Fisher's Iris data as scikit-learn ships it
(``sklearn.datasets.load_iris``): 150 flowers, four measurements in cm (``sepal_length``,
``sepal_width``, ``petal_length``, ``petal_width``) and the ``species`` as text (setosa,
versicolor, virginica). R. A. Fisher, "The use of multiple measurements in taxonomic problems",
Annals of Eugenics 7 (1936).

:class:`~lightning_modules.TabularDataModule` reads the file when it is made and checks it (a
missing file, a missing column, a value that is not a number are errors naming the file, column and
row); the target's distinct values become classes 0..C−1 (``class_names``); 20 % of the rows are
held out; each feature is standardised with the training rows' mean and standard deviation. The
network is a tanh MLP as wide as the table: ``num_features`` inputs, ``--hidden`` units,
``num_classes`` outputs (one for regression), converted to manual backprop by
:class:`~lightning_modules.ManualBackpropModule` and trained with Adam.

The same run from the command line (from the repository's root; the path is relative):

    manual-backprop fit -c configs/your_own_csv.yaml

or with flags only:

    manual-backprop fit --data=lightning_modules.TabularDataModule --data.path=examples/data/iris.csv \\
        --data.target=species --model.network=lightning_modules.MLP --model.network.sizes=[4,16,3] \\
        --model.network.activation=tanh --model.optimizer=Adam --model.optimizer.lr=0.01 --trainer.max_epochs=30
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_modules import MLP, ErrorTermLogger, ManualBackpropModule, TabularDataModule

IRIS = Path(__file__).resolve().parent / "data" / "iris.csv"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=IRIS, help="the table (default: the shipped Iris data)")
    parser.add_argument("--target", default="species", help="the column to predict (default species)")
    parser.add_argument("--features", nargs="+", default=None, help="the input columns (default: all others)")
    parser.add_argument("--task", choices=["classification", "regression"], default="classification")
    parser.add_argument("--hidden", type=int, default=16, help="tanh units in the hidden layer (default 16)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (default: no limit)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (default 0.01)")
    parser.add_argument("--logdir", default="runs/your_own_csv", help="the TensorBoard logdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="20 steps (5 epochs of 4): seconds")
    args = parser.parse_args(argv)
    if args.small:
        args.epochs, args.max_steps = 5, 20
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is deprecated, use.*")  # Lightning's own, about torch's pytree
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no banners: the script prints what matters

    pl.seed_everything(args.seed, verbose=False)
    data = TabularDataModule(args.csv, target=args.target, features=args.features, task=args.task,
                             batch_size=32, seed=args.seed)  # reads and checks the file now
    outputs = data.num_classes if args.task == "classification" else 1
    print(f"{args.csv.name}: {len(data.examples()[1])} rows, features {data.feature_names}, target {args.target!r}"
          + (f" with classes {data.class_names}" if args.task == "classification" else " (regression)"))

    network = MLP([data.num_features, args.hidden, outputs], activation="tanh")
    loss = "cross_entropy" if args.task == "classification" else "mse"
    model = ManualBackpropModule(network, loss=loss, optimizer=functools.partial(torch.optim.Adam, lr=args.lr))
    logger = TensorBoardLogger(args.logdir, name="")
    trainer = pl.Trainer(
        max_epochs=args.epochs, max_steps=args.max_steps, logger=logger, log_every_n_steps=10,
        callbacks=[ErrorTermLogger(every_n_steps=10)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    results = trainer.validate(model, datamodule=data, verbose=False)[0]

    if args.task == "classification":
        metric = results["val_acc"]
        print(f"trained {trainer.global_step} steps: validation accuracy {metric:.1%} "
              f"on {len(data.val_set)} held-out rows")
        x_val, y_val = data.val_set[:5]  # already standardised with the training rows' mean and std
        with torch.no_grad():
            predicted = model.predict_step(x_val, 0).tolist()  # class ids: the largest logit
        for p, t in zip(predicted, y_val.tolist()):
            print(f"  predicted {data.class_names[p]!r:<14} true {data.class_names[t]!r}")
    else:
        metric = results["val_mae"]
        print(f"trained {trainer.global_step} steps: validation mean absolute error {metric:.4g} "
              f"on {len(data.val_set)} held-out rows")
    print(f"look at the error terms: tensorboard --logdir {args.logdir}")
    return {"metric": metric, "run_dir": Path(logger.log_dir), "datamodule": data}


if __name__ == "__main__":
    main(sys.argv[1:])
