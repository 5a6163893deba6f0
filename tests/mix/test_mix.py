"""Mix plans: epochs per category from token shares."""

from __future__ import annotations

import pytest

from codemill.config import load_run_config as load_config
from codemill.errors import ConfigError, InputError
from codemill.mix.config import MixSpec
from codemill.mix.plan import CategoryTokens, category_tokens, check_categories, mix_warnings, plan_mix, select_copies
from codemill.schema import DOC_SCHEMA

BASE = MixSpec("base", {"code": 0.85, "nl_code": 0.08, "nl": 0.07})


def test_scarcest_category_bounds_the_mix():
    plan = plan_mix(BASE, {"code": 1_000_000, "nl_code": 10_000, "nl": 50_000}, 4.0, 0)
    assert plan.epochs["nl_code"] == pytest.approx(4.0)  # the binding category
    total = 10_000 * 4 / 0.08
    assert plan.target_tokens["code"] == round(0.85 * total)
    assert plan.epochs["code"] == pytest.approx(0.85 * total / 1_000_000)  # subsampled
    assert sum(plan.target_tokens.values()) == pytest.approx(total, rel=1e-6)


def test_fixed_total_and_its_limits():
    available = {"code": 100_000_000, "nl_code": 100_000, "nl": 100_000}
    plan = plan_mix(BASE, available, 4.0, 200_000)
    assert plan.epochs["nl"] == pytest.approx(0.07 * 200_000 / 100_000)
    with pytest.raises(InputError, match="more than mix.max_epochs=4 epochs of nl_code"):
        plan_mix(BASE, available, 4.0, 10_000_000)


def test_category_without_documents_is_an_error():
    with pytest.raises(InputError, match="no documents of nl"):
        plan_mix(BASE, {"code": 10, "nl_code": 10}, 4.0, 0)


def test_shares_must_sum_to_one(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[[mix.mixes]]\nname = "x"\nshares = { code = 0.5, nl = 0.4 }\n')
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(path)
    path.write_text('[[mix.mixes]]\nname = "x"\nshares = { code = 0.5, java = 0.5 }\n')
    with pytest.raises(ConfigError, match=r"mix.mixes\[0\].shares.java: unknown category"):
        load_config(path)


def test_python_share_moves_python_out_of_code(spark):
    rows = [
        (f"id{i:03d}", "s", None, f"f{i}.py", lang, kind, "extension", None, "x", 1, "h", None, False)
        for i, (lang, kind) in enumerate([("python", "code")] * 10 + [("c", "code")] * 10
                                          + [("markdown", "nl_code")] * 10 + [("text", "nl")] * 10)
    ]
    docs = spark.createDataFrame(rows, DOC_SCHEMA)
    python_mix = MixSpec("python", {"python": 0.75, "code": 0.10, "nl_code": 0.10, "nl": 0.05})
    plan = plan_mix(python_mix, {"python": 10, "code": 10, "nl_code": 10, "nl": 10}, 3.0, 0)
    picked = select_copies(docs, plan, python_mix, seed=0)
    per_cat = {r["category"]: r["count"] for r in picked.groupBy("category").count().collect()}
    assert per_cat["python"] == 30  # 3 whole epochs: every document three times
    copies = sorted(r["copy"] for r in picked.where("category = 'python' and id = 'id000'").collect())
    assert copies == [0, 1, 2]
    again = select_copies(docs, plan, python_mix, seed=0)
    assert sorted(map(tuple, picked.select("id", "copy").collect())) == \
        sorted(map(tuple, again.select("id", "copy").collect()))


def test_category_tokens_counts_tokens_and_buckets_lengths_by_powers_of_two(spark):
    lengths = {"python": [0, 1, 7, 8, 1 << 29], "c": [2, 3, 1023, 1024], "text": [4]}
    rows = [(f"{lang}{i}", "nl" if lang == "text" else "code", lang, n)
            for lang, ns in lengths.items() for i, n in enumerate(ns)]
    docs = spark.createDataFrame(rows, "id string, kind string, lang string, n_tokens long")
    python_mix = MixSpec("python", {"python": 0.75, "code": 0.10, "nl_code": 0.10, "nl": 0.05})
    counted = category_tokens(docs, python_mix)
    assert counted.tokens == {"python": 16 + (1 << 29), "code": 2052, "nl": 4}
    # exact powers of two open their bucket (2^29 included, where a float log2 can slip)
    assert counted.histogram == {"python": {"0": 1, "1": 1, "4": 1, "8": 1, str(1 << 29): 1},
                                 "code": {"2": 2, "512": 1, "1024": 1}, "nl": {"4": 1}}
    assert counted.largest == {"python": 1 << 29, "code": 1024, "nl": 4}
    # one python document holds nearly all python tokens; nl is one document
    assert counted.lopsided(0.4) == {"python": pytest.approx(1.0), "code": pytest.approx(1024 / 2052),
                                     "nl": 1.0}


def test_mix_warnings_name_a_lopsided_category_and_a_missed_share(spark):
    mix = MixSpec("base", {"code": 0.85, "nl": 0.15})
    available = CategoryTokens({"code": 1000, "nl": 200}, {}, {"code": 900, "nl": 10})
    warnings = mix_warnings(mix, available, {"code": 198, "nl": 802}, max_document_share=0.05)
    assert "one code document holds 90.0% of all code tokens" in warnings[0]
    assert any("code is 19.8% of the tokens, 85.0% requested" in w for w in warnings)
    assert mix_warnings(mix, CategoryTokens({"code": 1000}, {}, {"code": 10}), {"code": 85, "nl": 15},
                        0.05) == []


def test_check_categories_names_the_mix_and_gives_a_working_one(spark):
    docs = spark.createDataFrame([("a", "code", "python"), ("b", "code", "c")], "id string, kind string, lang string")
    mixes = [MixSpec("base", {"code": 0.85, "nl_code": 0.08, "nl": 0.07}),
             MixSpec("python", {"python": 0.75, "code": 0.25})]
    with pytest.raises(InputError) as err:
        check_categories(docs, mixes)
    message = str(err.value)
    assert "mix 'base' wants nl, nl_code" in message and "documents: code 2, python 1" in message
    assert '[[mix.mixes]]\nname = "base"\nshares = { code = 1 }' in message
    check_categories(docs, mixes[1:])  # python and other code are both there
    with pytest.raises(InputError, match="no documents are left"):
        check_categories(docs.where("false"), mixes)

