import minineo
import torch
model = minineo.load()
tokens = model.to_tokens(["When Mary and John", "The cat sat on the"])
out = model.generate(tokens, max_new_tokens=16)
print(model.to_string(out[:, tokens.shape[1]:]))
print(model.generation_config)
assert model.generation_config.eos_token_ids == (256,)
space = 32
stopped = model.generate(tokens, max_new_tokens=16, eos_token_id=[space, 101])
free = model.generate(tokens, max_new_tokens=16, eos_token_id=None)
assert free.shape[1] == tokens.shape[1] + 16
assert stopped.shape[1] <= free.shape[1]
out = model.generate(tokens, max_new_tokens=16, eos_token_id=[110, 114], pad_token_id=0)
new = out[:, tokens.shape[1]:]
print(new.tolist())
print([model.to_string(row[row != 0]) for row in new])
assert new.tolist() == [[32, 119, 101, 110, 0, 0, 0], [32, 98, 101, 116, 116, 101, 114]]
first = model.generate(tokens, max_new_tokens=16, eos_token_id=[110, 114])
assert first[0, tokens.shape[1]:].tolist() == [32, 119, 101, 110, 110, 110, 110]
print("stopped", stopped[:, tokens.shape[1]:].tolist())
from minineo.errors import UserError
def T(l, f):
    try: r=f(); print("OK ", l, repr(r.tolist() if hasattr(r,'tolist') else r)[:160])
    except UserError as e: print("UE ", l, type(e).__name__, str(e)[:200])
    except Exception as e: print("RAW", l, type(e).__name__, str(e)[:200])
T("eos True", lambda: model.generate(tokens, 4, eos_token_id=True))
T("eos 32.0", lambda: model.generate(tokens, 4, eos_token_id=32.0))
T("eos []", lambda: model.generate(tokens, 4, eos_token_id=[]))
T("eos 2-D", lambda: model.generate(tokens, 4, eos_token_id=torch.tensor([[32]])))
T("eos 257", lambda: model.generate(tokens, 4, eos_token_id=257))
T("eos -1", lambda: model.generate(tokens, 4, eos_token_id=-1))
T("eos set", lambda: model.generate(tokens, 4, eos_token_id={32, 101}))
T("eos tensor scalar", lambda: model.generate(tokens, 4, eos_token_id=torch.tensor(32))[:, tokens.shape[1]:])
T("eos float tensor", lambda: model.generate(tokens, 4, eos_token_id=torch.tensor([32.0])))
T("eos np", lambda: __import__('numpy').int64(32) and model.generate(tokens, 4, eos_token_id=__import__('numpy').int64(32))[:, tokens.shape[1]:])
T("eos ['a']", lambda: model.generate(tokens, 4, eos_token_id=["a"]))
T("eos [32, True]", lambda: model.generate(tokens, 4, eos_token_id=[32, True]))
T("pad -1", lambda: model.generate(tokens, 4, pad_token_id=-1))
T("pad 1.0", lambda: model.generate(tokens, 4, pad_token_id=1.0))
T("max_new 0", lambda: model.generate(tokens, 0))
T("max_new -1", lambda: model.generate(tokens, -1))
T("max_new 1.5", lambda: model.generate(tokens, 1.5))
T("max_new 200 (past n_ctx)", lambda: model.generate(tokens, 200).shape)
T("temperature 0 sampling", lambda: model.generate(tokens, 4, do_sample=True, temperature=0.0))
T("temperature nan", lambda: model.generate(tokens, 4, do_sample=True, temperature=float('nan')))
T("top_k 0", lambda: model.generate(tokens, 4, do_sample=True, top_k=0))
T("top_k -1", lambda: model.generate(tokens, 4, do_sample=True, top_k=-1))
T("top_k 1000", lambda: model.generate(tokens, 4, do_sample=True, top_k=1000).shape)
T("top_k with greedy", lambda: model.generate(tokens, 4, top_k=5).shape)
T("float tokens", lambda: model.generate(tokens.float(), 4))
T("str input", lambda: model.generate("When Mary", 4))
