"""Worked examples (``manual-backprop explain``): the published numbers, a user's file, bad files.

The published numbers are written here, apart from the example files, so that a wrong file cannot
pass: each is checked at the precision it was printed with.
"""

import json
from decimal import Decimal
from itertools import pairwise

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_modules.teaching_cli import main
from manual_backprop.worked_example import (
    ACTIVATIONS,
    LOSSES,
    WORKED_EXAMPLES,
    WorkedExample,
    WorkedExampleError,
    load_worked_example,
)

# Han & Kamber, Data Mining: Concepts and Techniques, Figure 9.5 and its tables (units 1-3 in, 4-5 hidden, 6 out)
HK_NET_INPUT = {"4": "-0.7", "5": "0.1", "6": "-0.105"}
HK_OUTPUT = {"4": "0.332", "5": "0.525", "6": "0.474"}
HK_ERR = {"6": "0.1311", "5": "-0.0065", "4": "-0.0087"}
HK_NEW = {"w46": "-0.261", "w56": "-0.138", "w14": "0.192", "w15": "-0.306", "w24": "0.4", "w25": "0.1",
          "w34": "-0.508", "w35": "0.194", "θ6": "0.218", "θ5": "0.194", "θ4": "-0.408"}

# Matt Mazur, "A Step by Step Backpropagation Example" (2015)
MAZUR_OUTPUT = {"h1": "0.593269992", "h2": "0.596884378", "o1": "0.75136507", "o2": "0.772928465"}
MAZUR_LOSS = "0.298371109"
MAZUR_NEW = {"w5": "0.35891648", "w6": "0.408666186", "w7": "0.511301270", "w8": "0.561370121",
             "w1": "0.149780716", "w2": "0.19956143", "w3": "0.24975114", "w4": "0.29950229"}
MAZUR_LOSS_AT_10000 = "0.0000351085"


def at_precision(computed: float, published: str) -> bool:
    """``computed`` rounded to the decimals ``published`` was printed with equals it."""
    decimals = -Decimal(published).as_tuple().exponent
    return round(computed, decimals) == float(published)


def by_unit(step, key):
    rows = step.forward_rows() if key in ("z", "a") else step.error_rows()
    return {r["unit"]: r[key] for r in rows if r[key] is not None}


@pytest.fixture(scope="module")
def han_kamber():
    return load_worked_example("han-kamber").step(check=True)


@pytest.fixture(scope="module")
def mazur():
    return load_worked_example("mazur").step(check=True)


# -- the published numbers ---------------------------------------------------------------------------
def test_han_kamber_forward_pass_matches_the_book(han_kamber):
    z, a = by_unit(han_kamber, "z"), by_unit(han_kamber, "a")
    for unit, book in HK_NET_INPUT.items():
        assert at_precision(z[unit], book), (unit, z[unit], book)
    for unit, book in HK_OUTPUT.items():
        assert at_precision(a[unit], book), (unit, a[unit], book)


def test_han_kamber_error_terms_match_the_book(han_kamber):
    # The book computes Err6 from its rounded O6 = 0.474: 0.1311 where the exact value is 0.13117.
    # Within one unit of the book's fourth decimal, as tests/test_han_kamber.py allows.
    err = by_unit(han_kamber, "Err")
    for unit, book in HK_ERR.items():
        assert abs(err[unit] - float(book)) <= 1e-4, (unit, err[unit], book)
    delta = by_unit(han_kamber, "delta")
    assert all(delta[u] == -err[u] for u in err)  # Err_j = −δ_j


def test_han_kamber_updates_match_the_book(han_kamber):
    new = {r["name"]: r["new"] for r in han_kamber.update_rows()}
    for name, book in HK_NEW.items():
        assert round(new[name], 3) == float(book), (name, new[name], book)  # three decimals, as printed


def test_mazur_matches_the_post(mazur):
    a = by_unit(mazur, "a")
    for unit, post in MAZUR_OUTPUT.items():
        assert at_precision(a[unit], post), (unit, a[unit], post)
    assert at_precision(mazur.losses[1], MAZUR_LOSS)
    rows = {r["name"]: r for r in mazur.update_rows()}
    for name, post in MAZUR_NEW.items():
        assert at_precision(rows[name]["new"], post), (name, rows[name]["new"], post)
    # one bias per layer, shared by its units and not updated, as in the post
    assert rows["b1"]["grad"] is None and rows["b1"]["new"] == 0.35 and rows["b1"]["to"] == "h1, h2"
    assert rows["b2"]["grad"] is None and rows["b2"]["new"] == 0.60


@pytest.mark.slow
def test_mazur_after_10000_steps():
    step = load_worked_example("mazur").step(steps=10_000)
    # the error the 10,000th iteration computes (its forward pass, before its update)
    assert at_precision(step.losses[10_000], MAZUR_LOSS_AT_10000), step.losses[10_000]
    comparison = [c for c in step.comparisons() if c["name"] == "at step 10000"]
    assert comparison and comparison[0]["mark"] == "✓"


def test_the_files_publish_the_same_numbers():
    """The example files' ``published`` sections, shown in the output, are the numbers above."""
    for name, expected in [("han-kamber", {"net_input": HK_NET_INPUT, "output": HK_OUTPUT, "Err": HK_ERR,
                                            "new": HK_NEW}),
                           ("mazur", {"output": MAZUR_OUTPUT, "new": MAZUR_NEW})]:
        published = load_worked_example(name).published
        for key, numbers in expected.items():
            assert {k: float(p.value) for k, p in published[key].items()} == {k: float(v) for k, v in
                                                                               numbers.items()}, (name, key)
    assert load_worked_example("mazur").published["loss_at_step"][10_000].text == MAZUR_LOSS_AT_10000


def test_every_comparison_agrees(han_kamber, mazur):
    marks = [c["mark"] for c in han_kamber.comparisons()]
    assert marks.count("≈") == 1 and marks.count("✗") == 0  # Err6, rounded by the book
    assert {c["mark"] for c in mazur.comparisons()} == {"✓"}


def test_manual_backprop_equals_autograd(han_kamber, mazur):
    assert han_kamber.autograd_difference() < 1e-15
    assert mazur.autograd_difference() < 1e-15


# -- the command line ----------------------------------------------------------------------------------
def test_explain_prints_the_book_numbers(capsys):
    main(["explain", "--example", "han-kamber"])
    out = capsys.readouterr().out
    assert "Err_j = −δ_j" in out and "δ_j = ∂C/∂z_j" in out
    assert "0.1311 ≈" in out and "-0.261 ✓" in out and "0.474 ✓" in out and "-0.105 ✓" in out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("w46"))
    assert row[:6] == ["w46", "4", "→", "6", "-0.3000", "-0.0435"] and row[-3:] == ["-0.2608", "-0.261", "✓"]
    assert "19 of 20 agree at the printed precision" in out


def test_explain_mazur_with_check(capsys):
    main(["explain", "--example", "mazur", "--check"])
    out = capsys.readouterr().out
    for number in [*MAZUR_OUTPUT.values(), *MAZUR_NEW.values(), MAZUR_LOSS]:
        assert f"{number} ✓" in out, number
    assert "autograd δ_j" in out and "largest difference from autograd" in out
    assert "run with --steps 10000 to compare" in out
    assert "13 of 13 agree" in out


def test_explain_json(capsys):
    main(["explain", "--example", "mazur", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["sizes"] == [2, 2, 2] and result["learning_rate"] == 0.5
    assert {r["name"] for r in result["updates"]} == {*MAZUR_NEW, "b1", "b2"}
    assert all(c["mark"] == "✓" for c in result["published"])


def test_explain_steps_shows_the_loss_by_step(capsys):
    main(["explain", "--example", "mazur", "--steps", "10", "--digits", "5"])
    out = capsys.readouterr().out
    assert "Loss over 10 steps" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["1", "0.298371109"] in rows  # C at step 1, at the post's precision
    assert any(row[:1] == ["10"] and len(row) == 2 for row in rows)
    assert "after step 10: C =" in out


def test_list_names_the_examples(capsys):
    main(["explain", "--list"])
    out = capsys.readouterr().out
    assert all(name in out for name in WORKED_EXAMPLES)


@pytest.mark.parametrize("args", [["--example", "rumelhart"], []])
def test_unknown_or_missing_example_lists_the_choices(args, capsys):
    with pytest.raises(SystemExit) as done:
        main(["explain", *args])
    assert done.value.code == 2
    assert "han-kamber, mazur" in capsys.readouterr().err


# -- a user's file -------------------------------------------------------------------------------------
USER_NET = {
    "title": "two samples through a tanh network",
    "activation": "tanh",
    "loss": "squared_error",
    "learning_rate": 0.1,
    "inputs": [[0.5, -1.0], [1.0, 2.0]],
    "targets": [[0.2], [-0.4]],
    "layers": [
        {"weights": [[0.1, 0.2], [0.3, -0.4], [0.5, 0.6]], "biases": [0.0, 0.1, -0.1]},
        {"weights": [[0.7, -0.8, 0.9]], "biases": 0.05, "activation": "identity"},
    ],
}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_user_file_runs(tmp_path, capsys, suffix):
    path = tmp_path / f"my_net{suffix}"
    path.write_text(json.dumps(USER_NET) if suffix == ".json" else yaml.safe_dump(USER_NET, allow_unicode=True))
    main(["explain", str(path), "--check"])
    out = capsys.readouterr().out
    assert "two samples through a tanh network" in out and "2-3-1" in out and "sample" in out
    step = load_worked_example(path).step(check=True)
    assert step.autograd_difference() < 1e-14
    # the default names: units numbered from the input, w_ij, θ_j (one number for a one-unit layer's bias)
    assert [r["name"] for r in step.update_rows()][:4] == ["w36", "w46", "w56", "θ6"]


def test_a_shared_bias_moves_by_the_sum_over_its_units():
    example = WorkedExample.from_dict(dict(USER_NET, layers=[
        {"weights": [[0.1, 0.2], [0.3, -0.4]], "biases": 0.25},
        {"weights": [[0.7, -0.8]], "biases": [0.05]}]))
    step = example.step(check=True)
    b1, b1_grad = step.new[0][1], step.grads[0][1]
    shared = b1_grad.sum().item()  # ∂C/∂b of one parameter used by both units
    assert torch.allclose(b1, torch.full((2,), 0.25 - 0.1 * shared, dtype=torch.float64))
    row = next(r for r in step.update_rows() if r["kind"] == "bias" and r["to"] == "3, 4")
    assert row["name"] == "b1"  # the default name of a layer's shared bias
    assert row["grad"] == pytest.approx(shared) and row["autograd_grad"] == pytest.approx(shared)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=4), samples=st.integers(1, 3),
       activation=st.sampled_from(sorted(ACTIVATIONS)), loss=st.sampled_from(sorted(LOSSES)),
       update_biases=st.booleans(), seed=st.integers(0, 2**16))
def test_random_networks_step_like_autograd(sizes, samples, activation, loss, update_biases, seed):
    """Any small network: δ and ∂C/∂w equal autograd's, and w_new = w_old − η·∂C/∂w."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g).tolist()

    spec = {"activation": activation, "loss": loss, "learning_rate": 0.3, "update_biases": update_biases,
            "inputs": rand(samples, sizes[0]), "targets": rand(samples, sizes[-1]),
            "layers": [{"weights": rand(n_out, n_in), "biases": rand(n_out)} for n_in, n_out in pairwise(sizes)]}
    step = WorkedExample.from_dict(spec).step(check=True)
    assert step.autograd_difference() < 1e-12
    for row in step.update_rows():
        if row["grad"] is not None:
            assert row["new"] == pytest.approx(row["old"] - 0.3 * row["grad"], abs=1e-15)
        else:
            assert row["kind"] == "bias" and not update_biases and row["new"] == row["old"]
    assert str(step)  # lays out any network


# -- bad files -------------------------------------------------------------------------------------------
def bad(spec_changes: dict, drop: tuple = ()) -> str:
    spec = {k: v for k, v in dict(USER_NET, **spec_changes).items() if k not in drop}
    with pytest.raises(WorkedExampleError) as error:
        WorkedExample.from_dict(spec, where="my_net.yaml")
    return str(error.value)


def test_missing_keys_are_named():
    message = bad({}, drop=("learning_rate", "targets"))
    assert "missing key(s) ['learning_rate', 'targets']" in message and "η" in message


def test_inconsistent_sizes_name_the_shapes():
    message = bad({"layers": [{"weights": [[0.1, 0.2], [0.3, 0.4]]}, {"weights": [[0.1, 0.2, 0.3]]}]})
    assert "layers[1].weights is 1×3" in message and "layer 0 has 2 units" in message
    assert "layers[0].weights is 2×2" in message
    message = bad({"inputs": [1.0, 2.0, 3.0]})
    assert "inputs is 3 but the network needs 2 per sample" in message and "layers[0].weights is 3×2" in message
    message = bad({"targets": [[0.1, 0.2], [0.3, 0.4]]})
    assert "targets is 2×2" in message and "needs 1 per sample" in message
    message = bad({"layers": [{"weights": [[0.1, 0.2]], "biases": [0.1, 0.2]}]})
    assert "layers[0].biases is 2 but the layer has 1 units" in message
    message = bad({"sizes": [2, 4, 1]})
    assert "sizes says [2, 4, 1] but the weights make [2, 3, 1]" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"activation": "softsign"}, "unknown 'softsign'; choose one of ['identity', 'relu', 'sigmoid', 'tanh']"),
    ({"loss": "hinge"}, "choose one of ['half_squared_error', 'mean_squared_error', 'squared_error']"),
    ({"learning_rate": -1}, "learning_rate (η) must be a number above 0"),
    ({"layers": [{"weights": [[0.1, 0.2], [0.3]]}]}, "layers[0].weights is ragged"),
    ({"layers": [{"weights": [[0.1, 0.2]], "bias": [0.1]}]}, "unknown key(s) ['bias']"),
    ({"epochs": 3}, "unknown key(s) ['epochs']; the keys are: title"),
    ({"published": {"new": {"w99": 0.5}}}, "published.new: no weight or bias named 'w99'; the names are ['w13'"),
    ({"published": {"output": {"3": 0.5}}}, "published values per unit need one sample; the file has 2"),
    ({"published": {"loss": "about 0.3"}}, "published.loss must be a number, got 'about 0.3'"),
    ({"names": {"units": [["a", "b"], ["c"]]}}, "names.units must list the units layer by layer, input first, "
                                                "[2, 3, 1]"),
    ({"update_biases": "no"}, "update_biases must be true or false"),
])
def test_bad_values_say_what_is_wrong(change, expected):
    assert expected in bad(change)


def test_an_unreadable_file_is_reported(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("layers: [\n")
    with pytest.raises(WorkedExampleError, match="not valid YAML"):
        load_worked_example(path)
    with pytest.raises(SystemExit):
        main(["explain", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert "not a file, nor one of the shipped examples ['han-kamber', 'mazur']" in err


@pytest.mark.parametrize("key", ["net_input", "Err", "delta"])
def test_a_published_value_an_input_unit_cannot_have_is_refused_when_loading(tmp_path, key):
    """An input unit has an output (its x) but no net input, δ or Err: named at load, not a traceback later."""
    spec = yaml.safe_load(WORKED_EXAMPLES["han-kamber"].read_text(encoding="utf-8"))
    spec["published"] = {key: {"1": 0.1}}
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    with pytest.raises(WorkedExampleError, match=rf"published.{key}: no unit named '1'; the names are \['4', '5', "):
        load_worked_example(path)
