"""Train the shapes judge (a thin wrapper of ``python -m t2i.shapes.train_judge``).

The command that made the shipped ``core/shapes/judge.safetensors`` (on one H200, see
BENCHMARKS.md, "Shapes judge")::

    python benchmarks/train_judge.py --out runs/judge --steps 40000 --max-minutes 5 \
        --ckpt-every 0 --log-every 1000
    cp runs/judge/judge.safetensors core/shapes/judge.safetensors

A CPU smoke run: ``--steps 20 --batch-size 32 --pool 400 --test-n 100 --workers 2``.
"""

from t2i.shapes.train_judge import main

if __name__ == "__main__":
    main()
