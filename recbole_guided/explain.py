"""Attribute-level explanations of a trained Guided model's recommendations.

Every score the Guided models compute is a dot product over the refined table plus, for BERT4Rec,
a per-item bias: ``score(u, i) = <h_u[:b], b_i> + sum_a h_u[b + a] * g_i[a] + bias_i``, where the
guided coordinates of ``h_u`` already hold the user's attribute weights ``p_u``. So each score splits
exactly into a base part and one contribution per named attribute (``decompose``).

    python run_recbole_guided.py explain --user=196 [--model_file=saved/GuidedSASRec-....pth]
        [--k=10] [--item=TOKEN] [--markdown=out.md] [--png=out.png]

Without ``--model_file`` the newest ``saved/<--model>-*.pth`` (default GuidedSASRec) is used.
Without ``--item`` the item the user actually chose next (their test item) is explained.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recbole_guided.atomic_files import AtomicFormat, read_atomic, read_header
from recbole_guided.errors import ConfigError, GuidedError
from recbole_guided.evaluation import decompose


@dataclass
class ItemExplanation:
    token: str
    title: str
    rank: int                # 1 = recommended first (among items the user has not seen)
    total: float             # the model's own score
    base: float              # from the base coordinates (plus BERT4Rec's item bias)
    contributions: dict[str, float]  # from each guided attribute, by name

    @property
    def guided(self) -> float:
        return sum(self.contributions.values())


@dataclass
class Explanation:
    user: str
    model: str
    history: list[str]                      # titles, most recent last
    top: list[ItemExplanation]
    focus: ItemExplanation | None           # the item asked about (default: the user's test item)
    focus_is_test_item: bool
    profile_initial: dict[str, float] = field(default_factory=dict)
    profile_learned: dict[str, float] = field(default_factory=dict)


def _user_row(dataset, split_data, user_token: str):
    uid = dataset.uid_field
    try:
        user_id = dataset.token2id(uid, user_token)
    except ValueError:
        raise GuidedError(f"user '{user_token}' is not in dataset {dataset.dataset_name}") from None
    inter = split_data.dataset.inter_feat
    rows = (inter[uid] == user_id).nonzero().flatten()
    if len(rows) == 0:
        raise GuidedError(f"user '{user_token}' has no test interaction in {dataset.dataset_name}")
    return inter[rows[-1:]]


TITLE_FIELDS = ("movie_title", "title", "name")


def _titles(dataset) -> list[str]:
    """A readable name per item id: the title column of the ``.item`` file, else the token
    (read from the file, so it works whatever ``load_col`` loaded)."""
    fmt = AtomicFormat.from_config(dataset.config)
    tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
    path = Path(dataset.config["data_path"]) / f"{dataset.dataset_name}.item"
    if not path.is_file():
        return tokens
    field = next((name for name in TITLE_FIELDS if name in read_header(path, fmt)), None)
    if field is None:
        return tokens
    table = read_atomic(path, fmt, what="item file", fields=[fmt.item_field, field])
    titles = [" ".join(words) for words in table.sequences(field, fmt)] if table.types[field] == "token_seq" \
        else table.columns[field]
    names = dict(zip(table.columns[fmt.item_field], titles))
    return [names.get(token, token) for token in tokens]


def explain(model, dataset, test_data, user_token: str, k: int = 10, item_token: str | None = None,
            exclude_seen: bool = True) -> Explanation:
    """Explain ``model``'s top-k for a user, from everything the user did before their test item.

    ``exclude_seen`` leaves out the items already in the user's sequence, as a product would
    (RecBole's sequential evaluation does not). Ranks are counted the same way.
    """
    if not hasattr(model.item_embedding, "base_dim"):
        raise ConfigError(f"{type(model).__name__} has no refined item table: explain needs a Guided model")
    model.eval()
    interaction = _user_row(dataset, test_data, user_token).to(model.device)
    base, contributions = decompose(model, interaction)
    base, contributions = base[0].cpu(), contributions[0].cpu()
    scores = base + contributions.sum(-1)
    seq = interaction[model.ITEM_SEQ][0, :interaction[model.ITEM_SEQ_LEN][0]].cpu()
    ranked = scores.clone()
    ranked[0] = -torch.inf                              # padding is never recommended
    if exclude_seen:
        ranked[seq] = -torch.inf
    order = torch.argsort(ranked, descending=True)
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(1, len(order) + 1)
    tokens, titles = dataset.field2id_token[dataset.iid_field], _titles(dataset)
    attributes = model.item_embedding.attributes

    def item(i: int) -> ItemExplanation:
        return ItemExplanation(str(tokens[i]), titles[i], int(rank_of[i]), float(scores[i]), float(base[i]),
                               dict(zip(attributes, contributions[i].tolist())))

    test_item = int(interaction[model.ITEM_ID][0])
    if item_token is None:
        focus = item(test_item)
    else:
        try:
            focus = item(dataset.token2id(dataset.iid_field, item_token))
        except ValueError:
            raise GuidedError(f"item '{item_token}' is not in dataset {dataset.dataset_name}") from None
    explanation = Explanation(user_token, type(model).__name__, [titles[i] for i in seq.tolist()],
                              [item(int(i)) for i in order[:k]], focus, item_token is None)
    if getattr(model, "user_guided", None) is not None:
        u = int(interaction[model.USER_ID][0])
        explanation.profile_initial = dict(zip(attributes, model.user_guided.initial[u].tolist()))
        explanation.profile_learned = dict(zip(attributes, model.user_guided.weight[u].tolist()))
    return explanation


# --- rendering --------------------------------------------------------------------------------

def _short(title: str, width: int = 34) -> str:
    return title if len(title) <= width else title[:width - 1] + "…"


def _with_focus(e: Explanation, items: list[ItemExplanation]) -> list[ItemExplanation]:
    """``items``, then the focus item unless it is already among them."""
    return items + ([e.focus] if e.focus.token not in {i.token for i in items} else [])


def _why(e: Explanation) -> list[str]:
    """The focus item against the first recommendation, attribute by attribute."""
    f, top = e.focus, e.top[0]
    if f.token == top.token:
        return [f"'{f.title}' is the first recommendation"
                + (": a hit." if e.focus_is_test_item else ".")]
    gaps = {a: f.contributions[a] - top.contributions[a] for a in f.contributions}
    lead = sorted(gaps.items(), key=lambda kv: kv[1])
    lines = [f"'{f.title}' ranks #{f.rank} with {f.total:.3f}, {top.total - f.total:.3f} below "
             f"'{top.title}' (#1): base part {f.base - top.base:+.3f}, guided part {f.guided - top.guided:+.3f}."]
    behind = [f"{a} {g:+.3f}" for a, g in lead[:3] if g < 0]
    ahead = [f"{a} {g:+.3f}" for a, g in reversed(lead[-3:]) if g > 0]
    if behind:
        lines.append("It loses most on " + ", ".join(behind) + ".")
    if ahead:
        lines.append("It gains on " + ", ".join(ahead) + ".")
    return lines


def to_markdown(e: Explanation) -> str:
    attrs = list(e.top[0].contributions)
    lines = [f"### User {e.user} ({e.model})", "",
             f"Recent history (most recent last): {'; '.join(e.history[-5:])}", ""]
    if e.profile_learned:
        lines += ["| attribute | profile at start | learned profile |", "|---|---|---|"]
        lines += [f"| {a} | {e.profile_initial[a]:+.2f} | {e.profile_learned[a]:+.2f} |" for a in attrs]
        lines.append("")
    lines += ["| rank | item | total | base | guided | " + " | ".join(attrs) + " |",
              "|---" * (5 + len(attrs)) + "|"]
    shown = _with_focus(e, e.top)
    for i in shown:
        cells = [str(i.rank), _short(i.title) + (" (chosen next)" if e.focus_is_test_item and i.token == e.focus.token else ""),
                 f"{i.total:.3f}", f"{i.base:.3f}", f"{i.guided:+.3f}"]
        lines.append("| " + " | ".join(cells + [f"{i.contributions[a]:+.3f}" for a in attrs]) + " |")
    lines += ["", *_why(e)]
    return "\n".join(lines) + "\n"


def to_table(e: Explanation) -> str:
    attrs = list(e.top[0].contributions)
    head = f"{'rank':>5} {'item':<34} {'total':>7} {'base':>7} {'guided':>7}  " + " ".join(f"{a[:9]:>9}" for a in attrs)
    lines = [f"user {e.user} ({e.model}); recent history: {' | '.join(_short(t, 24) for t in e.history[-5:])}"]
    if e.profile_learned:
        lines.append("profile (start -> learned): " + ", ".join(
            f"{a} {e.profile_initial[a]:+.2f}->{e.profile_learned[a]:+.2f}" for a in attrs))
    lines.append(head)
    shown = _with_focus(e, e.top)
    for i in shown:
        mark = "*" if i.token == e.focus.token else " "
        lines.append(f"{i.rank:>4}{mark} {_short(i.title):<34} {i.total:>7.3f} {i.base:>7.3f} {i.guided:>+7.3f}  "
                     + " ".join(f"{i.contributions[a]:>+9.3f}" for a in attrs))
    lines.append(("* the item the user chose next: " if e.focus_is_test_item else "* the item asked about: ")
                 + " ".join(_why(e)))
    return "\n".join(lines)


def to_png(e: Explanation, path: str | Path, items: int = 3) -> None:
    """Bar charts: each attribute's contribution for the first ``items`` recommendations and the
    focus item (the base part, usually far larger, is given in the panel's title so that it does
    not flatten the bars), and the user's profile at start and learned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = _with_focus(e, e.top[:items])
    attrs = list(e.top[0].contributions)
    panels = len(shown) + (1 if e.profile_learned else 0)
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 0.38 * len(attrs) + 2.4), sharey=True)
    axes = np.atleast_1d(axes)
    reach = max(abs(i.contributions[a]) for i in shown for a in attrs) * 1.1 or 1.0
    for ax, i in zip(axes, shown):
        values = [i.contributions[a] for a in attrs]
        ax.barh(attrs, values, color=["#2a9d8f" if v >= 0 else "#e76f51" for v in values])
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlim(-reach, reach)  # one scale for every item, so bars compare across panels
        ax.set_title(f"#{i.rank} {_short(i.title, 26)}\nscore {i.total:.2f} = base {i.base:.2f} "
                     f"{i.guided:+.2f}", fontsize=9)
    if e.profile_learned:
        ax = axes[-1]
        y = np.arange(len(attrs))
        ax.barh(y - 0.2, [e.profile_initial[a] for a in attrs], height=0.4, color="#bbbbbb", label="at start")
        ax.barh(y + 0.2, [e.profile_learned[a] for a in attrs], height=0.4, color="#264653", label="learned")
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(f"user {e.user}: attribute profile", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(f"Why {e.model} recommends these to user {e.user}: each attribute's contribution to the score",
                 fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def newest_checkpoint(model: str, folder: str | Path = "saved") -> Path:
    files = sorted(Path(folder).glob(f"{model}-*.pth"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise GuidedError(f"no {folder}/{model}-*.pth checkpoint: train one first (README) or pass --model_file")
    return files[-1]


def main(argv: list[str]) -> int:
    from recbole_guided.quick_start import load_guided_model

    parser = argparse.ArgumentParser(prog="run_recbole_guided.py explain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", required=True, help="user token, as in the .inter file")
    parser.add_argument("--model_file", default=None)
    parser.add_argument("--model", default="GuidedSASRec", help="whose newest checkpoint to use")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--item", default=None, help="explain this item's rank (default: the user's test item)")
    parser.add_argument("--markdown", default=None, help="also write the explanation as Markdown here")
    parser.add_argument("--png", default=None, help="also write the bar chart here")
    parser.add_argument("--include_seen", action="store_true", help="rank items already in the history too")
    args = parser.parse_args(argv)
    model_file = Path(args.model_file) if args.model_file else newest_checkpoint(args.model)
    _, model, dataset, _, _, test_data = load_guided_model(model_file)
    e = explain(model, dataset, test_data, args.user, args.k, args.item, exclude_seen=not args.include_seen)
    print(f"checkpoint: {model_file}")
    print(to_table(e))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(to_markdown(e))
        print(f"markdown written to {args.markdown}")
    if args.png:
        to_png(e, args.png)
        print(f"chart written to {args.png}")
    return 0
