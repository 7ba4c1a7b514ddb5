"""Synthetic behaviour data with planted structure, at any scale, in MovieLens layout.

    eges synth --out data/synth-100k --items 100000 --users 50000 --events 5000000

Writes ``ratings.csv``, ``movies.csv`` and ``tags.csv`` (the ``movielens`` format, so every
config and test that reads MovieLens reads this), and ``communities.csv`` (``movieId,community``:
the planted truth, which the walk job does not read), with:

* **communities**: every item belongs to one of ``communities`` groups; a community has its own
  genres (2 of ``genres``), a decade of years and a pool of tags, so side information predicts
  behaviour;
* **power-law popularity**: within a community, item weights follow a Zipf law (``zipf_a``);
* **sessions**: a user has a few favourite communities; their events come in sessions of
  consecutive seconds separated by gaps of hours to days, each session mostly inside one
  community
  (``stay`` is the chance the next event stays in it);
* **noise** (all 0 by default): ``tag_noise`` is the share of tags drawn from the tags of every
  community instead of the item's own community's pool; ``genre_noise`` and ``year_noise`` the
  share of items whose genres (2 at random) or year (1920–2029) ignore their community. With
  them side information predicts behaviour less, as user-written tags and loose categories do.

Deterministic for a seed; generated and written in chunks of users, so memory stays bounded
by the item tables and one chunk. Shared module: numpy and pyarrow only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from eges.cli import fail, parser

MAX_EVENTS_PER_USER = 50_000  # the heavy tail is cut here (and timestamps stay before 2100)
GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


@dataclass(frozen=True)
class SynthSpec:
    """What to generate (defaults: a small data set of ml-latest-small's shape)."""

    items: int = 10_000
    users: int = 600
    events: int = 100_000
    communities: int = 50
    zipf_a: float = 1.1  # popularity exponent within a community
    stay: float = 0.9  # chance that the next event of a session stays in the community
    session_length: float = 8.0  # mean events per session (geometric)
    tags_per_item: int = 2
    tag_noise: float = 0.0  # share of tags from any community's pool, not the item's own
    genre_noise: float = 0.0  # share of items with 2 random genres
    year_noise: float = 0.0  # share of items with a random year
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("stay", "tag_noise", "genre_noise", "year_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {getattr(self, name)}")


def item_table(spec: SynthSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Community, popularity weight, genres, year and tags of every item (ids 1..items)."""
    n, c = spec.items, spec.communities
    community = rng.integers(0, c, n)
    rank = np.empty(n, dtype=np.int64)
    for k in range(c):  # Zipf rank inside each community, in a random order
        members = np.flatnonzero(community == k)
        rank[members] = rng.permutation(len(members)) + 1
    weight = rank.astype(np.float64) ** -spec.zipf_a
    genre_pairs = np.stack([rng.choice(len(GENRES), 2, replace=False) for _ in range(c)])
    decade = rng.integers(192, 202, c) * 10
    year = decade[community] + rng.integers(0, 10, n)
    num_tags = max(4 * c, 10)
    tag_pool = rng.integers(0, num_tags, (c, 6))  # 6 tags per community
    tags = tag_pool[community[:, None], rng.integers(0, 6, (n, spec.tags_per_item))]
    genres = genre_pairs[community]
    # noise draws only when asked for: the data of a spec without noise stays as it was
    if spec.tag_noise > 0:
        noisy = rng.random(tags.shape) < spec.tag_noise
        tags[noisy] = tag_pool.ravel()[rng.integers(0, tag_pool.size, int(noisy.sum()))]
    if spec.genre_noise > 0:
        noisy = rng.random(n) < spec.genre_noise
        first = rng.integers(0, len(GENRES), int(noisy.sum()))
        second = (first + rng.integers(1, len(GENRES), len(first))) % len(GENRES)  # distinct
        genres = genres.copy()
        genres[noisy] = np.stack([first, second], axis=1)
    if spec.year_noise > 0:
        noisy = rng.random(n) < spec.year_noise
        year[noisy] = rng.integers(1920, 2030, int(noisy.sum()))
    return {
        "community": community,
        "weight": weight,
        "genres": genres,
        "year": year,
        "tags": tags,
    }


def _samplers(items: dict[str, np.ndarray], communities: int):
    """Per community: its item ids and the cumulative popularity for inverse-CDF draws."""
    order = np.argsort(items["community"], kind="stable")
    bounds = np.searchsorted(items["community"][order], np.arange(communities + 1))
    cum = []
    for k in range(communities):
        w = items["weight"][order[bounds[k] : bounds[k + 1]]]
        cum.append(np.cumsum(w) / w.sum() if len(w) else np.zeros(0))
    return order + 1, bounds, cum


def events_chunk(
    spec: SynthSpec, users: np.ndarray, per_user: np.ndarray, samplers, rng: np.random.Generator
) -> pa.Table:
    """Events of a chunk of users: sessions inside favourite communities."""
    ids, bounds, cum = samplers
    c = spec.communities
    total = int(per_user.sum())
    user_col = np.repeat(users, per_user)
    favourites = rng.integers(0, c, (len(users), 3))
    # community of every event: a session picks one favourite, events stay with prob `stay`
    new_session = rng.random(total) < 1.0 / spec.session_length
    starts = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    new_session[starts] = True
    session_id = np.cumsum(new_session) - 1
    session_user = user_col[new_session]
    session_fav = favourites[
        np.searchsorted(users, session_user), rng.integers(0, 3, len(session_user))
    ]
    comm = session_fav[session_id]
    wander = rng.random(total) >= spec.stay
    comm[wander] = rng.integers(0, c, int(wander.sum()))
    item = np.empty(total, dtype=np.int64)
    u = rng.random(total)
    for k in np.unique(comm):
        sel = np.flatnonzero(comm == k)
        if bounds[k + 1] == bounds[k]:  # an empty community: any item
            item[sel] = rng.integers(1, spec.items + 1, len(sel))
            continue
        pos = np.minimum(np.searchsorted(cum[k], u[sel]), bounds[k + 1] - bounds[k] - 1)
        item[sel] = ids[bounds[k] + pos]
    # time: 1 s between events of a session, 2 hours to 2 days between sessions of a user
    # (with at most MAX_EVENTS_PER_USER events a user's history spans < 35 years from 2001)
    step = np.where(new_session, rng.integers(2 * 3600, 2 * 86_400, total), 1)
    ts = 1_000_000_000 + np.cumsum(step) - np.repeat(np.cumsum(step)[starts], per_user)
    return pa.table(
        {"userId": user_col, "movieId": item, "rating": np.full(total, 4.0), "timestamp": ts}
    )


def generate(out: str | Path, spec: SynthSpec, chunk_users: int = 20_000) -> dict[str, int]:
    """Write the data set into ``out``; returns row counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    items = item_table(spec, rng)
    ids = np.arange(1, spec.items + 1)
    genres = ["|".join(GENRES[g] for g in pair) for pair in items["genres"]]
    pacsv.write_csv(
        pa.table(
            {
                "movieId": ids,
                "title": [f"Item {i} ({y})" for i, y in zip(ids, items["year"])],
                "genres": genres,
            }
        ),
        out / "movies.csv",
    )
    pacsv.write_csv(
        pa.table({"movieId": ids, "community": items["community"]}), out / "communities.csv"
    )
    tag_items = np.repeat(ids, spec.tags_per_item)
    pacsv.write_csv(
        pa.table(
            {
                "userId": np.ones(len(tag_items), dtype=np.int64),
                "movieId": tag_items,
                "tag": [f"tag{t}" for t in items["tags"].ravel()],
                "timestamp": np.full(len(tag_items), 1_000_000_000),
            }
        ),
        out / "tags.csv",
    )
    # events per user: heavy-tailed, at least 2, summing to `events`
    activity = rng.pareto(1.5, spec.users) + 1.0
    per_user = np.clip(
        np.floor(activity / activity.sum() * spec.events), 2, MAX_EVENTS_PER_USER
    ).astype(np.int64)
    samplers = _samplers(items, spec.communities)
    rows = 0
    with pacsv.CSVWriter(
        out / "ratings.csv",
        pa.schema(
            [
                ("userId", pa.int64()),
                ("movieId", pa.int64()),
                ("rating", pa.float64()),
                ("timestamp", pa.int64()),
            ]
        ),
    ) as writer:
        for lo in range(0, spec.users, chunk_users):
            users = np.arange(lo + 1, min(lo + chunk_users, spec.users) + 1)
            table = events_chunk(spec, users, per_user[lo : lo + chunk_users], samplers, rng)
            writer.write_table(table)
            rows += table.num_rows
    return {
        "items": spec.items,
        "users": spec.users,
        "events": rows,
        "tags": len(tag_items),
        "communities": spec.communities,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("synth", __doc__)
    p.add_argument("--out", required=True, help="output directory (MovieLens layout)")
    for name, default in [
        ("items", SynthSpec.items),
        ("users", SynthSpec.users),
        ("events", SynthSpec.events),
        ("communities", SynthSpec.communities),
        ("seed", SynthSpec.seed),
    ]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--zipf-a", type=float, default=SynthSpec.zipf_a)
    p.add_argument(
        "--stay", type=float, default=SynthSpec.stay, help="chance a session's next event stays"
    )
    for name, text in (
        ("tag-noise", "share of tags from any community's pool"),
        ("genre-noise", "share of items with random genres"),
        ("year-noise", "share of items with a random year"),
    ):
        p.add_argument(f"--{name}", type=float, default=0.0, help=f"{text} (default 0)")
    args = p.parse_args(argv)
    if min(args.items, args.users, args.events, args.communities) < 1:
        return fail("--items, --users, --events and --communities must be >= 1")
    try:
        spec = SynthSpec(
            items=args.items,
            users=args.users,
            events=args.events,
            communities=args.communities,
            zipf_a=args.zipf_a,
            stay=args.stay,
            tag_noise=args.tag_noise,
            genre_noise=args.genre_noise,
            year_noise=args.year_noise,
            seed=args.seed,
        )
    except ValueError as exc:
        return fail(f"--{str(exc).replace('_', '-')}")
    start = time.perf_counter()
    counts = generate(args.out, spec)
    print(
        f"wrote {counts['events']:,} events of {counts['users']:,} users on "
        f"{counts['items']:,} items ({counts['communities']} communities) to {args.out} in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
