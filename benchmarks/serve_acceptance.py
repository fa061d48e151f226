"""The `xke serve` acceptance flow on a toy world, through a live server and the official openai client.

    python benchmarks/serve_acceptance.py [--model runs/xkde-toy/model] [--cases 20] [--first 0] [--memory FILE]

For each of ``--cases`` world cases (from ``--first``): ask the Chinese question, add the English edit
through ``POST /v1/edits``, ask again (the answer, the edit ids used), retire the edit, ask again. Then
roll back to just after the first edit was added, ask its question, restart the server over the same
memory file and ask once more. Prints one JSON line per case and the share of edited answers equal to
the Chinese ``target_new``. ``--model`` is an X-KDE-trained toy-world model (its config names its world;
the world's dense retriever and calibrated threshold are used); default: the X-KDE model of the tiny
world shipped with xke (``xke demo``'s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="X-KDE-trained toy-world model (default: the one shipped with xke, as `xke demo` uses it)")
    ap.add_argument("--world", default=None, help="world directory (default: the one the model's config names)")
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--memory", default=None, help="memory file (default: a new temporary one)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import httpx
    import openai
    import torch
    torch.set_num_threads(args.threads)
    from xke.data.loaders import read_jsonl
    from xke.serve.app import KeyRing, create_app
    from xke.serve.runner import build_service, start_server
    from xke.world.provider import world_dir_of

    if args.model is None:
        from xke.artifacts import demo_artifacts
        args.model = str(demo_artifacts()[1])
    key = "acceptance-key-0123456789"
    memory = args.memory or str(Path(tempfile.mkdtemp(prefix="xke-accept-")) / "memory.sqlite")

    def start():
        svc = build_service(args.model, memory, device="cpu")
        return svc, start_server(create_app(svc, KeyRing({key: "ops"})))

    svc, srv = start()
    world = Path(args.world) if args.world else world_dir_of(args.model)
    if world is None:
        ap.error("--model is not a toy-world model; pass --world")
    cases = list(read_jsonl(world / "cases.jsonl"))[args.first:args.first + args.cases]
    auth = {"Authorization": f"Bearer {key}"}

    def client():
        return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0)

    def ask(cl, q):
        r = cl.chat.completions.create(model=svc.model_id, messages=[{"role": "user", "content": q}])
        return r.choices[0].message.content, [e["id"] for e in r.edits_used]

    cl = client()
    print(f"model {svc.model_id}, retriever {svc.method.config.retriever}, threshold {svc.method.score_threshold()}")
    edited_ok = restored = first_added = 0
    for case in cases:
        en, zh = case.view("en"), case.view("zh")
        before, _ = ask(cl, zh.prompt)
        e = httpx.post(f"{srv.url}/v1/edits", headers=auth, json={"prompt": en.prompt, "target": en.target_new,
                                                                  "subject": en.subject, "language": "en"}).json()["data"][0]
        first_added = first_added or e["created"]
        after, used = ask(cl, zh.prompt)
        time.sleep(0.01)
        httpx.delete(f"{srv.url}/v1/edits/{e['id']}", headers=auth)
        retired, used_after = ask(cl, zh.prompt)
        edited_ok += after == zh.target_new
        restored += retired == before
        print(json.dumps({"case": case.case_id, "edit_id": e["id"], "used": used, "before": before, "edited": after,
                          "target": zh.target_new, "retired": retired, "used_after_retire": used_after},
                         ensure_ascii=False))
    n = len(cases)
    print(f"edited answer = Chinese target for {edited_ok}/{n}; original answer back after retiring for {restored}/{n}")
    rb = httpx.post(f"{srv.url}/v1/edits/rollback", headers=auth, json={"to": first_added + 0.005}).json()
    print(f"rollback to just after the first edit: {rb}; its question now: {ask(cl, cases[0].view('zh').prompt)}")
    srv.stop()
    svc.close()
    svc, srv = start()
    cl = client()
    n_all = len(httpx.get(f"{srv.url}/v1/edits", params={"active": "all"}).json()["data"])
    print(f"after a restart: {ask(cl, cases[0].view('zh').prompt)}; edits stored {n_all}; audit rows "
          f"{len(httpx.get(f'{srv.url}/v1/audit', params={'limit': 100000}, headers=auth).json()['data'])}")
    srv.stop()
    svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
