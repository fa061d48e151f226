"""EasyEdit's FT loop (FT-L and FT-M), step for step: the reference that ``edit_speed.py`` times xke's FT
against and that ``tests/test_weight_reference.py`` holds xke's FT deltas to.

It follows ``easyeditor/models/ft/ft_main.py: execute_ft`` of zjunlp/EasyEdit (the version with
``objective_optimization``; read, not copied, with its control flow and tensor operations kept):

- set-up: copies of the edited weights, Adam on them (``lr``, ``weight_decay``), ``requires_grad`` set
  by parameter name;
- every step, per batch (here one request): the prompt and the target tokenized again;
  ``prompt_last`` (FT-L): a full forward of the prompt with its attention mask, logits at every position,
  the target's mean NLL at the prompt's last token; ``target_new`` (FT-M): the prompt + target tokenized
  too, a full forward of it, cross-entropy at every position masked to the target's tokens;
- ``loss.item()``; backward and an Adam step only if the loss is at least ``stop_loss``; the L∞ clamp
  (``norm_constraint``) after every step; the loop stops once the step's loss is below ``stop_loss``;
- the deltas ``W − W₀`` are returned and the weights restored.

Two deliberate departures, so that the work equals xke's: the texts are joined as xke joins them and the
loss scores xke's target ids (EasyEdit puts a space before every target and trains on the BOS token the
target's own tokenization starts with; both change what is learnt and when the loss stops, not the cost
of a step). Left out: EasyEdit's prints (four per step), and the ``gc.collect()`` /
``torch.cuda.empty_cache()`` per step of its newest version, which only make it slower.
"""

from __future__ import annotations

import torch

from xke.models.architectures import arch_spec
from xke.models.prompts import encode_prompt_target, prompt_answer_separator


def execute_ft(model, tok, prompt_text: str, target: str, lang: str, *, layer: int,
               objective: str = "prompt_last", steps: int = 25, lr: float = 5e-4, weight_decay: float = 0.0,
               norm: float | None = 5e-4, stop_loss: float = 1e-2) -> dict[str, torch.Tensor]:
    """Fine-tune the MLP output projection of ``layer`` on one request as EasyEdit's ``execute_ft`` does;
    return ``{parameter name: W − W₀}`` with the model restored."""
    target_text = prompt_answer_separator(tok, prompt_text, lang) + target
    prompt_ids, target_ids_xke = encode_prompt_target(tok, prompt_text, target, lang)
    # a chat-rendered prompt holds its BOS already: EasyEdit's tokenizer calls would add a second one
    special = {"add_special_tokens": not (tok.bos_token and prompt_text.startswith(tok.bos_token))}
    if tok([prompt_text + target_text], **special)["input_ids"][0] != prompt_ids + target_ids_xke:
        raise ValueError(f"{prompt_text!r} + {target_text!r}: the joined text's tokens are not the prompt's and "
                         "the target's as xke encodes them; the reference would do other work")
    name = arch_spec(model).mlp_out.format(layer) + ".weight"
    weights = {n: p for n, p in model.named_parameters() if n == name}
    copies = {n: w.detach().clone() for n, w in weights.items()}
    opt = torch.optim.Adam(list(weights.values()), lr=lr, weight_decay=weight_decay)
    for n, w in model.named_parameters():
        w.requires_grad = n in weights
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    with torch.enable_grad():
        for _ in range(steps):
            inputs = tok([prompt_text], return_tensors="pt", padding=True, **special)
            tok([target_text], return_tensors="pt", padding=True, **special)       # EasyEdit's target_ids (their cost)
            target_ids = torch.tensor([target_ids_xke])                 # the loss scores xke's target ids
            bs = inputs["input_ids"].shape[0]
            opt.zero_grad()
            if objective == "prompt_last":
                last = inputs["attention_mask"].sum(dim=1) - 1
                mask = torch.ones_like(target_ids, dtype=torch.bool) if tok.unk_token_id is None \
                    else torch.ne(target_ids, tok.unk_token_id)
                logits = model(**inputs).logits
                logp = torch.log_softmax(logits[torch.arange(bs), last], dim=-1)
                loss = (-(torch.gather(logp, 1, target_ids) * mask).sum(1) / mask.sum(1)).mean()
            elif objective == "target_new":
                both = tok([prompt_text + target_text], return_tensors="pt", padding=True, **special)
                n_prompt = [int((i != tok.pad_token_id).sum()) for i in inputs["input_ids"]]
                n_pad = [int((i == tok.pad_token_id).sum()) for i in both["input_ids"]]
                plen, width = [a + b for a, b in zip(n_pad, n_prompt)], both["input_ids"].size(1)
                label_mask = torch.tensor([[False] * k + [True] * (width - k) for k in plen])
                logits = model(**both).logits
                shift_logits = logits[..., :-1, :].contiguous()
                shift_labels = both["input_ids"][..., 1:].contiguous()
                loss = ce(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1)).view(bs, -1)
                loss = ((loss * label_mask[:, 1:]).sum(1) / label_mask[:, 1:].sum(1)).mean()
            else:
                raise ValueError(f"objective {objective!r}: prompt_last or target_new")
            value = loss.item()
            if value >= stop_loss:
                loss.backward()
                opt.step()
            if norm is not None:
                with torch.no_grad():
                    for n, w in weights.items():
                        w[...] = torch.clamp(w, min=copies[n] - norm, max=copies[n] + norm)
            if value < stop_loss:
                break
    deltas = {n: (w - copies[n]).detach() for n, w in weights.items()}
    with torch.no_grad():
        for n, w in weights.items():
            w.requires_grad_(False)
            w[...] = copies[n]
    return deltas
