"""Search a combination space too big to enumerate for the split with the best validation score.

    python -m splitnet.enumerate --set split.strategy=search --set split.budget=200 \
        --set data.validation_fraction=0.2 --set model.hidden=[64,64]

Hill climbing with sideways moves, seeded, scored on *validation* accuracy only::

    evaluation 0:  the start split (split.start: the weights split, or a random one)
    step t >= 1:   m = split.candidates neighbours of the current split, drawn with
                   seeds.search_seed(cfg, t); a neighbour swaps the groups of two neurons of
                   one layer (balance kept), layer l chosen with probability h_l / sum h,
                   never a split already evaluated; the m are trained and evaluated together
                   (over the ranks);
                   current <- the best of them if its validation accuracy >= the current's
                   (ties: the earliest; equal moves cross the plateaus of a discrete score)
    restart:       when no new neighbour is found (a local maximum whose neighbourhood is all
                   evaluated), the step is m random splits and current <- the best of them,
                   worse or not (hill climbing with random restarts; ``best`` is kept)
    until split.budget evaluations.

Evaluation e is row ``combination = e`` (with its exact ``index`` in the full space), so a
killed search resumes: the recorded rows are replayed through the same proposals, and only the
missing evaluations are trained. Every row carries ``search = {step, current, best, restart}``:
the evaluation it was proposed from (a neighbour of it, unless ``restart``) and the best
evaluation so far, so the last row's ``best`` is the search's result. Test accuracy is never
read (tests/test_sample_search.py poisons the test labels: the path does not change).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .analysis import pick_on_validation
from .combinations import Space
from .config import Config
from .experiment import Prepared, run_combinations
from .model import MLP
from .seeds import search_seed
from .split import Split, make_split, random_split

MAX_TRIES = 64  # neighbour draws per wanted candidate before a random restart


@dataclass
class Candidates:
    """The ``Indexed`` space of a search: evaluation e is ``splits[e]``."""

    space: Space
    budget: int
    splits: dict[int, Split] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.budget

    def split_at(self, combination: int) -> Split:
        return self.splits[combination]

    def index(self, combination: int) -> int:
        return self.space.index_of(self.splits[combination])


def neighbour(split: Split, groups: int, rng: np.random.Generator) -> Split:
    """Swap the groups of two neurons (in different groups) of one layer, h_l-weighted."""
    widths = np.array([len(a) for a in split], dtype=float)
    l = int(rng.choice(len(split), p=widths / widths.sum()))
    labels = split[l]
    i = int(rng.integers(len(labels)))
    others = np.flatnonzero(labels != labels[i])
    j = int(others[rng.integers(len(others))])
    new = labels.copy()
    new[i], new[j] = labels[j], labels[i]
    return tuple(new if m == l else a for m, a in enumerate(split))


def start_split(cfg: Config, net: MLP) -> Split:
    """Evaluation 0: the weights split of the pretrained net, or a random split."""
    seed = search_seed(cfg, 0)
    if cfg.split.start == "weights":
        return make_split("weights", net, cfg.split.groups, seed=seed)
    return random_split(net.hidden, cfg.split.groups, seed)


@dataclass
class Search:
    """The search's state; ``propose`` and ``record`` are pure, so replaying rows resumes it."""

    cfg: Config
    space: Space
    net: MLP
    step: int = 0
    evaluated: int = 0
    seen: set[int] = field(default_factory=set)  # exact indices already evaluated
    scores: list[float] = field(default_factory=list)  # validation accuracy of evaluation e
    current: int = -1  # the evaluation we move from
    best: int = -1
    restarting: bool = False  # the proposed step is a random restart
    candidates: Candidates = field(init=False)

    def __post_init__(self) -> None:
        self.candidates = Candidates(self.space, self.cfg.split.budget)

    @property
    def done(self) -> bool:
        return self.evaluated >= self.cfg.split.budget

    def propose(self) -> list[int]:
        """The evaluations of the next step (their splits go to ``candidates``)."""
        s = self.cfg.split
        if self.step == 0:
            wanted = [start_split(self.cfg, self.net)]
        else:
            rng = np.random.default_rng(search_seed(self.cfg, self.step))
            m = min(s.candidates, s.budget - self.evaluated)
            origin = self.candidates.splits[self.current]
            wanted, picked = [], set()
            self.restarting = False
            while len(wanted) < m:
                for _ in range(MAX_TRIES):
                    cand = neighbour(origin, s.groups, rng)
                    if self._fresh(cand, picked):
                        break
                else:  # the neighbourhood is used up: a restart step of random splits
                    if not self.restarting:
                        self.restarting, wanted, picked = True, [], set()
                    while True:
                        cand = random_split(self.net.hidden, s.groups, int(rng.integers(2**63)))
                        if self._fresh(cand, picked):
                            break
                picked.add(self.space.index_of(cand))
                wanted.append(cand)
        first = self.evaluated
        for e, split in enumerate(wanted, first):
            self.candidates.splits[e] = self.space.canonical(split)
        return list(range(first, first + len(wanted)))

    def _fresh(self, split: Split, picked: set[int]) -> bool:
        i = self.space.index_of(split)
        return i not in self.seen and i not in picked

    def record(self, scores: dict[int, float]) -> None:
        """The validation accuracies of the proposed step; moves the current split."""
        step = sorted(scores)
        if step != list(range(self.evaluated, self.evaluated + len(step))):
            raise ValueError(f"search step {self.step}: evaluations {step} are not the next ones")
        for e in step:
            self.seen.add(self.candidates.index(e))
            self.scores.append(scores[e])
        top = pick_on_validation({e: scores[e] for e in step})  # ties: the earliest
        if self.current < 0 or self.restarting or scores[top] >= self.scores[self.current]:
            self.current = top
        if self.best < 0 or scores[top] > self.scores[self.best]:
            self.best = top
        self.evaluated += len(step)
        self.step += 1


def steps(
    prep: Prepared,
    recorded: dict[int, tuple[int | str, float]],
    evaluate: Callable[[list[int], Candidates], list[dict]] | None = None,
) -> Iterator[list[dict]]:
    """Yield the new rows of every step (recorded evaluations are replayed, not trained).

    ``recorded``: evaluation -> (index, validation accuracy) of the rows already in the file.
    ``evaluate(evaluations, candidates)`` -> rows (default: ``run_combinations`` on this
    process; the driver deals them over the ranks).
    """
    if prep.data.validation is None:
        raise ValueError("split.strategy='search' needs data.validation_fraction > 0")
    space = prep.space
    assert isinstance(space, Space)
    search = Search(prep.config, space, prep.pretrained)
    evaluate = evaluate or (lambda es, cands: run_combinations(prep, es, cands))
    while not search.done:
        proposed = search.propose()
        todo = [e for e in proposed if e not in recorded]
        for e in proposed:
            if e in recorded and str(recorded[e][0]) != str(search.candidates.index(e)):
                raise ValueError(
                    f"the recorded row of evaluation {e} holds index {recorded[e][0]}, but the "
                    f"search proposes {search.candidates.index(e)}: the file is of another search"
                )
        rows = evaluate(todo, search.candidates) if todo else []
        scores = {e: recorded[e][1] for e in proposed if e in recorded}
        scores.update({r["combination"]: r["validation_accuracy"] for r in rows})
        current, restart = search.current, search.restarting
        search.record(scores)
        for r in rows:
            r["search"] = {
                "step": search.step - 1,
                "current": current,
                "best": search.best,
                "restart": restart,
            }
        yield rows


def best_so_far(rows: list[dict]) -> list[dict]:
    """The row picked on validation (``analysis.pick_on_validation``: ties to the earliest)
    among a search's evaluations 0..e, for every e: the search's trajectory, whose last entry
    is its result (rows: one per evaluation, ``combination`` = e, in any order)."""
    by_evaluation = {r["combination"]: r for r in rows}
    picks: list[dict] = []
    for e in sorted(by_evaluation):
        contenders = {e: by_evaluation[e]["validation_accuracy"]}
        if picks:  # the pick of all before e and e itself is the pick of all up to e
            best = picks[-1]["combination"]
            contenders[best] = picks[-1]["validation_accuracy"]
        picks.append(by_evaluation[pick_on_validation(contenders)])
    return picks


def pick_ranks(
    rows: list[dict], test: np.ndarray, validation: np.ndarray, fractions: Sequence[float]
) -> list[dict]:
    """Where a search's pick (``best_so_far``) after b = max(1, round(f * space)) evaluations
    ranks in a space whose every combination's ``test`` and ``validation`` accuracy is known
    (arrays by exact index), for each fraction f of the space the search reached: rank 1 is
    the best of the space."""
    picks, out = best_so_far(rows), []
    for f in fractions:
        if (b := max(1, round(f * len(test)))) > len(picks):
            continue
        i = int(picks[b - 1]["index"])
        row = {"fraction": f, "evaluations": b, "index": i, "test": float(test[i])}
        row["rank_test"], row["rank_validation"] = (
            int(1 + np.sum(v > v[i])) for v in (test, validation)
        )
        row["same_as_enumeration"] = bool(picks[b - 1]["accuracy"] == test[i])
        out.append(row)
    return out
