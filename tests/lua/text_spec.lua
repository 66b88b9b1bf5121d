-- tide.models.text: tokens, the GRU encoder and the GRU language-model
-- decoder against PyTorch (tests/fixtures/vae.txt, case "text"), and a
-- decoder that learns the ten class names and generates them back.
local tide = require("tide")
local text = require("tide.models.text")
local fixture = dofile("tests/lua/fixture.lua")

describe("text modality", function()
  it("encodes and decodes class names", function()
    local ids = text.from_labels(tide.from_table{9, 0, 8})
    assert.same({3, text.MAX_LEN}, ids:shape())
    assert.same({"ankle boot", "t-shirt/top", "bag"}, text.decode(ids))
    -- "bag": b a g EOS PAD...
    assert.same({4, 3, 9, text.EOS, 0}, {ids:at(3, 1), ids:at(3, 2), ids:at(3, 3), ids:at(3, 4), ids:at(3, 5)})
    assert.same({12, text.EOS}, {text.mask(ids):sum(2):at(2), ids:at(2, 12)})
    assert.has_error(function() text.encode({"Hello!"}) end)
    assert.has_error(function() text.encode({"much too long for twelve"}) end)
  end)

  it("encoder posterior, decoder log-likelihood and gradients match PyTorch", function()
    local P = fixture.load("vae").text_params
    local F = fixture.load("vae").text
    local enc = text.Encoder{vocab = 7, embed = 4, hidden = 5, latent = 3}
    local dec = text.Decoder{vocab = 7, embed = 4, hidden = 5, latent = 3, max_len = 4}
    local function load(m, prefix)
      local sd = {}
      for name in m:named_parameters() do sd[name] = P[prefix .. name] end
      m:load_state_dict(sd)
    end
    load(enc, "enc.")
    load(dec, "dec.")
    local mu, lv = enc(P.ids)
    local ll = dec:log_prob(P.z, P.ids)
    fixture.assert_close(mu, F.mu, 1e-5, 1e-5, "mu")
    fixture.assert_close(lv, F.logvar, 1e-5, 1e-5, "logvar")
    fixture.assert_close(ll, F.log_lik, 1e-5, 1e-5, "log p(text|z)")
    local loss = ll:sum() + (mu * tide.from_table{0.5, -1.0, 2.0}):sum() + (lv * 0.3):sum()
    loss:backward()
    for name, p in enc:named_parameters() do
      fixture.assert_close(p:grad(), F["grad.enc." .. name], 1e-5, 1e-4, "enc " .. name)
    end
    for name, p in dec:named_parameters() do
      fixture.assert_close(p:grad(), F["grad.dec." .. name], 1e-5, 1e-4, "dec " .. name)
    end
    -- K samples: z [2,B,D] gives [2,B], each row the same as alone
    local z2 = tide.stack({P.z, P.z * 0.5}, 1)
    local ll2 = tide.no_grad(function() return dec:log_prob(z2, P.ids) end)
    fixture.assert_close(ll2:select(1, 1), F.log_lik, 1e-5, 1e-5, "K=2 row 1")
  end)

  it("a decoder learns the ten names from their class embedding and generates them", function()
    tide.manual_seed(1)
    local dec = text.Decoder{latent = 10, hidden = 48, embed = 8}
    local ids = text.class_ids()
    local z = tide.eye and tide.eye(10) or tide.one_hot(tide.arange(10), 10)
    local opt = tide.optim.Adam(dec, {lr = 0.03})
    local first, last
    for step = 1, 80 do
      opt:zero_grad()
      local loss = -dec:log_prob(z, ids):mean()
      loss:backward()
      opt:step()
      first = first or loss:item()
      last = loss:item()
    end
    assert.is_true(last < 0.05 * first)
    assert.same(text.CLASS_NAMES, text.decode(dec:generate(z)))
    local s = text.decode(dec:generate(z, {sample = true, temperature = 0.5}))
    assert.equal(10, #s)
  end)

  it("works as a modality of tide.models.multimodal and for the coherence metrics", function()
    tide.manual_seed(3)
    local spec = text.modality{latent = 6, hidden = 16, embed = 4}
    assert.equal("text", spec.name)
    local ids = text.from_labels(tide.from_table{1, 9})
    local mu, lv = spec.encoder(ids)
    assert.same({2, 6}, mu:shape())
    local z = tide.randn(3, 2, 6)
    local params = spec.decoder(z:reshape(-1, 6)):reshape(3, 2, 6)
    fixture.assert_close(spec.likelihood(params, ids), spec.decoder.lm:log_prob(z, ids), 1e-6, 1e-6, "modality ll")
    -- the coherence metrics find the decoder's generate through model.decoders
    local model = {names = {"text"}, zdim = 6, decoders = tide.nn.ModuleList(spec.decoder)}
    function model:posterior(xs, mask) return spec.encoder(xs[1]) end
    local seen
    local clf = function(g) seen = g; return tide.zeros(g:size(1)) end
    local metrics = require("tide.metrics")
    metrics.conditional_coherence(model, {ids}, tide.zeros(2), {clf}, {target = 1, given = {1}})
    assert.same({2, text.MAX_LEN}, seen:shape())
  end)
end)
