"""Released training formats: ShareGPT XE-IT data and the release's TL-PO pairs train without conversion."""

from __future__ import annotations

import json

import pytest

from xke.cli import main
from xke.errors import DataError
from xke.train.importers import guess_lang, load_pairs, load_xeit_rows, prompt_messages

INSTR = ("Please acknowledge the updated information provided below and respond to the subsequent query in "
         "{lang}.\n\n[Updated Information]:\nWho founded Acme? Ada Lovelace\n\n[Query]:\n{q}")


def sharegpt_records(n: int = 8) -> list[dict]:
    """Records in the X-KDE release's XE-IT layout (sft/tokenizer.py reads id + conversations[from, value])."""
    out = []
    for i in range(n):
        zh = i % 2 == 1
        out.append({"id": f"r{i}", "conversations": [
            {"from": "human", "value": INSTR.format(lang="Chinese" if zh else "English",
                                                     q="谁创立了Acme？" if zh else f"Who created Acme {i}?")},
            {"from": "gpt", "value": "阿达·洛夫莱斯" if zh else "Ada Lovelace"}]})
    return out


def release_pairs(n: int = 6) -> list[dict]:
    """Pairs in the release's layout (ORPO/src/exact.py): the prompt rendered as '[INST]{user} [/INST] '."""
    return [{"prompt": "[INST]" + INSTR.format(lang="Chinese", q=f"谁创立了Acme{i}？") + " [/INST] ",
             "choice": "阿达·洛夫莱斯", "reject": "Ada Lovelace", "score-diff": 0.5 + i} for i in range(n)]


def test_sharegpt_rows_get_messages_and_inferred_metadata(tmp_path):
    f = tmp_path / "xeit.json"
    f.write_text(json.dumps(sharegpt_records(4), ensure_ascii=False), encoding="utf-8")
    rows, val = load_xeit_rows(f)
    assert val == [] and len(rows) == 4
    assert rows[1]["messages"][0]["role"] == "user" and rows[1]["messages"][1] == {"role": "assistant",
                                                                                    "content": "阿达·洛夫莱斯"}
    assert (rows[0]["tgt_lang"], rows[1]["tgt_lang"]) == ("en", "zh")  # named by X-KDE's instruction
    assert rows[0]["with_edit"] is True and rows[0]["imported"] is True and rows[0]["fact_id"] == "r0"
    assert guess_lang("Who?", "Ada") == "en" and guess_lang("谁？", "北京") == "zh"


@pytest.mark.parametrize("bad, field, msg", [
    ({"id": 1, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt"}]}, "conversations[1].value",
     "missing field"),
    ({"id": 1, "conversations": [{"from": "robot", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "conversations[0].from", "unknown speaker"),
    ({"id": 1, "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
     "conversations[1]", "last turn"),
    ({"id": 1, "text": "no conversations"}, "conversations", "missing field"),
])
def test_bad_sharegpt_rows_name_file_record_field(tmp_path, bad, field, msg):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(sharegpt_records(2) + [bad]), encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_xeit_rows(f)
    text = str(e.value)
    assert "bad.json" in text and "record 2" in text and field in text and msg in text and "\n" not in text


def test_release_pairs_read_as_conversational_pairs(tmp_path):
    (tmp_path / "zh-train.json").write_text(json.dumps(release_pairs(4), ensure_ascii=False), encoding="utf-8")
    (tmp_path / "zh-dev.json").write_text(json.dumps(release_pairs(1), ensure_ascii=False), encoding="utf-8")
    train, dev, layout = load_pairs(tmp_path / "zh-train.json")
    assert layout == "release" and len(train) == 4 and len(dev) == 1
    p = train[2]
    assert p["prompt"] == [{"role": "user", "content": INSTR.format(lang="Chinese", q="谁创立了Acme2？")}]
    assert p["chosen"][0]["content"] == "阿达·洛夫莱斯" and p["rejected"][0]["content"] == "Ada Lovelace"
    assert p["score_diff"] == 2.5 and p["tgt_lang"] == "zh"
    assert load_pairs(tmp_path)[0] == train  # the folder works too
    assert prompt_messages("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n") \
        == [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    bad = release_pairs(2) + [{"prompt": "[INST]x [/INST] ", "choice": "a"}]
    (tmp_path / "bad-train.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad-train.json.*record 2.*reject"):
        load_pairs(tmp_path / "bad-train.json")


@pytest.mark.slow
def test_released_formats_train_through_the_cli(tmp_path, capsys):
    """`xke train xeit --data release.json` and `xke train tlpo --pairs NAME-train.json` on a tiny model."""
    xeit = tmp_path / "xeit.json"
    xeit.write_text(json.dumps(sharegpt_records(8), ensure_ascii=False), encoding="utf-8")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("xeit: {max_steps: 2, per_device_train_batch_size: 4, logging_steps: 1, max_length: 1024}\n"
                   "tlpo: {max_steps: 1, per_device_train_batch_size: 2, warmup_steps: 0, max_length: 1024}\n",
                   encoding="utf-8")
    rc = main(["--threads", "1", "train", "xeit", "--model", "tiny-llama", "--data", str(xeit), "--config", str(cfg),
               "--out", str(tmp_path / "sft"), "--system-prompt", "You are a helpful assistant."])
    assert rc == 0
    m = json.loads((tmp_path / "sft" / "xeit_metrics.json").read_text())
    assert m["rows"] == 8 and m["steps"] == 2 and (tmp_path / "sft" / "model.safetensors").exists()
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "zh-train.json").write_text(json.dumps(release_pairs(4), ensure_ascii=False), encoding="utf-8")
    rc = main(["--threads", "1", "train", "tlpo", "--model", str(tmp_path / "sft"), "--pairs",
               str(pairs / "zh-train.json"), "--config", str(cfg), "--out", str(tmp_path / "po")])
    assert rc == 0
    t = json.loads((tmp_path / "po" / "model" / "tlpo_metrics.json").read_text())
    assert t["pairs_layout"] == "release" and t["pairs"] == 4 and t["steps"] == 1
    # the recipe's stage runner: the same command again skips the finished stage; other pairs redo it
    capsys.readouterr()
    po = ["--threads", "1", "train", "tlpo", "--model", str(tmp_path / "sft"), "--pairs", str(pairs / "zh-train.json"),
          "--config", str(cfg), "--out", str(tmp_path / "po")]
    assert main(po) == 0 and "[tlpo] complete, skipped" in capsys.readouterr().out
    (pairs / "zh-train.json").write_text(json.dumps(release_pairs(3), ensure_ascii=False), encoding="utf-8")
    assert main(po) == 0 and "[tlpo] running (stage 4 of 4)" in capsys.readouterr().out
    assert json.loads((tmp_path / "po" / "model" / "tlpo_metrics.json").read_text())["pairs"] == 3
    # a broken file: one line, exit code 2
    (pairs / "broken-train.json").write_text('[{"prompt": 3, "choice": "a", "reject": "b"}]', encoding="utf-8")
    rc = main(["train", "tlpo", "--model", "tiny-llama", "--pairs", str(pairs / "broken-train.json"),
               "--out", str(tmp_path / "po2")])
    err = capsys.readouterr().err
    assert rc == 2 and "broken-train.json" in err and "record 0" in err and "prompt" in err


def test_imported_rows_pass_the_presets_xke_filters(tmp_path):
    """`train tlpo --data` on rows without xke's metadata: the toy preset's section/scope filters name xke's own
    row kinds; imported rows pass them (with_edit is inferred from the [Updated Information] block)."""
    from xke.train.recipe import load_train_config
    from xke.train.sampling import select_prompts

    f = tmp_path / "x.json"
    recs = sharegpt_records(4) + [{"id": "plain", "conversations": [{"from": "human", "value": "Who?"},
                                                                    {"from": "gpt", "value": "Ada"}]}]
    f.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    cfg = load_train_config("toy").sampling
    assert cfg.sections and cfg.with_edit_only
    kept = select_prompts(load_xeit_rows(f)[0], cfg)
    assert sorted(r["id"] for r in kept) == ["r0", "r1", "r2", "r3"]  # the row without a descriptor is left out
