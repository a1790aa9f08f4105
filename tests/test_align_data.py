"""Fine-tuning data: every supported format loads, a malformed record is named by its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling.align.data import DataError, load_records, normalize, split_records, write_jsonl

SFT = [
    {"prompt": "Say hi.", "completion": " Hi."},
    {"prompt": "Count to two.", "completion": " One, two."},
    {"prompt": "Name a colour.", "completion": " Red."},
]
CHATS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."},
                  {"role": "assistant", "content": "Hi."}]},
    {"messages": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "B."},
                  {"role": "user", "content": "C?"}, {"role": "assistant", "content": "D."}]},
]
DPO = [
    {"prompt": "Say hi.", "chosen": " Hi.", "rejected": " Go away."},
    {"prompt": "2+2?", "chosen": " 4.", "rejected": " 5."},
]


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_prompt_completion_jsonl(tmp_path):
    recs = load_records(_jsonl(tmp_path / "sft.jsonl", SFT), "sft")
    assert recs == SFT


def test_messages_become_a_conversational_pair(tmp_path):
    recs = load_records(_jsonl(tmp_path / "chat.jsonl", CHATS), "sft")
    assert recs[0]["completion"] == [{"role": "assistant", "content": "Hi."}]
    assert [m["role"] for m in recs[0]["prompt"]] == ["system", "user"]
    # multi-turn: the last assistant turn is the completion, earlier turns are context
    assert recs[1]["completion"][0]["content"] == "D." and len(recs[1]["prompt"]) == 3


def test_parquet_json_and_saved_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(DPO), tmp_path / "pref.parquet")
    assert load_records(tmp_path / "pref.parquet", "dpo") == DPO
    (tmp_path / "pref.json").write_text(json.dumps(DPO))
    assert load_records(tmp_path / "pref.json", "dpo") == DPO
    datasets.DatasetDict({"train": datasets.Dataset.from_list(SFT)}).save_to_disk(str(tmp_path / "saved"))
    assert load_records(tmp_path / "saved", "sft") == SFT
    with pytest.raises(DataError, match="no split 'test'"):
        load_records(f"{tmp_path / 'saved'}@test", "sft")


def test_hugging_face_load_dataset_on_a_local_folder(tmp_path):
    # the same datasets.load_dataset call that fetches a hub dataset by name, pointed at a folder
    folder = tmp_path / "hub_like"
    folder.mkdir()
    _jsonl(folder / "train.jsonl", DPO)
    assert load_records(f"hf:{folder}@train", "dpo") == DPO
    with pytest.raises(DataError, match="could not load"):
        load_records(f"hf:{tmp_path / 'missing'}", "dpo")


@pytest.mark.parametrize(
    ("lines", "kind", "match"),
    [
        ([SFT[0], {"prompt": "x"}], "sft", r"sft\.jsonl:2: missing field 'completion'"),
        ([SFT[0], SFT[1], "{not json"], "sft", r"sft\.jsonl:3: not valid JSON"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "sft", r":1: .*no assistant turn"),
        ([{"messages": [{"role": "robot", "content": "hi"}]}], "sft", r":1: messages\[0\]\.role='robot'"),
        ([DPO[0], {"prompt": "p", "chosen": "a", "rejected": 3}], "dpo", r":2: fields prompt/chosen/rejected"),
        ([DPO[0], {"prompt": "p", "chosen": " ", "rejected": "b"}], "dpo", r":2: field 'chosen' is empty"),
        ([[1, 2]], "dpo", r":1: expected a JSON object"),
    ],
)
def test_malformed_record_names_its_line(tmp_path, lines, kind, match):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with pytest.raises(DataError, match=match):
        load_records(path, kind)


def test_blank_lines_are_not_records_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(SFT[0]) + "\n\n" + json.dumps({"prompt": "p"}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:3:"):
        load_records(path, "sft")


def test_unknown_source_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl", "sft")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        load_records(tmp_path / "empty.jsonl", "sft")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown file type"):
        load_records(tmp_path / "x.csv", "sft")


def test_normalize_rejects_mixed_kinds():
    with pytest.raises(DataError, match="all strings or all message lists"):
        normalize({"prompt": "p", "completion": [{"role": "assistant", "content": "c"}]}, "sft", "rec")


def test_split_is_seeded_and_disjoint():
    recs = [{"prompt": str(i), "completion": str(i)} for i in range(50)]
    a_train, a_eval = split_records(recs, 0.2, seed=1)
    b_train, b_eval = split_records(recs, 0.2, seed=1)
    assert (a_train, a_eval) == (b_train, b_eval)
    assert len(a_eval) == 10 and len(a_train) == 40
    assert not {r["prompt"] for r in a_train} & {r["prompt"] for r in a_eval}


def test_write_jsonl_round_trip(tmp_path):
    write_jsonl(tmp_path / "dpo.jsonl", DPO)
    assert load_records(tmp_path / "dpo.jsonl", "dpo") == DPO


def test_rl_prompts_load_and_a_malformed_one_is_named(tmp_path):
    chat = [{"role": "user", "content": "Say hi."}]
    path = _jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}, {"prompt": chat}])
    assert load_records(path, "prompt") == [{"prompt": "Say hi."}, {"prompt": chat}]
    _jsonl(path, [{"prompt": "Say hi."}, {"question": "x"}])
    with pytest.raises(DataError, match=r"prompts\.jsonl:2: missing field 'prompt'"):
        load_records(path, "prompt")
    _jsonl(path, [{"prompt": [{"role": "user"}]}])
    with pytest.raises(DataError, match=r"prompts\.jsonl:1: prompt\[0\] must be an object with 'role' and 'content'"):
        load_records(path, "prompt")
