using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// Checks of the Hugging Face reference itself: where it overlaps ReferenceDecoder the two agree, and
/// invariants of each family's semantics hold (each can fail on a wrong reading of transformers).
/// </summary>
public class HfReferenceTests
{
    public static IEnumerable<TestCaseData> SharedConfigs() =>
        HfTestConfigs.SharedWithReferenceDecoder.Select(c => new TestCaseData(c.Json).SetName($"Agrees_with_ReferenceDecoder({c.Name})"));

    public static IEnumerable<TestCaseData> NewFamilyConfigs(string test) =>
        HfTestConfigs.NewFamilies.Select(c => new TestCaseData(c.Json).SetName($"{test}({c.Name})"));

    private static IEnumerable<TestCaseData> PaddingCases() => NewFamilyConfigs(nameof(Left_padding_leaves_each_rows_logits_unchanged));
    private static IEnumerable<TestCaseData> WindowCases() => NewFamilyConfigs(nameof(A_one_layer_model_sees_exactly_its_window));
    private static IEnumerable<TestCaseData> WeightCases() => NewFamilyConfigs(nameof(Random_weights_cover_exactly_what_the_reference_reads));

    /// <summary>Ids [B, S] with left padding: row b has pads[b] padding slots (id 0) before its tokens.</summary>
    internal static (long[,] Ids, long[,] Mask, long[,] Positions) Batch(int length, int vocab, int seed, params int[] pads)
    {
        var random = new Random(seed);
        int batch = pads.Length;
        long[,] ids = new long[batch, length], mask = new long[batch, length], positions = new long[batch, length];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++)
            {
                bool real = t >= pads[b];
                ids[b, t] = real ? random.Next(vocab) : 0;
                mask[b, t] = real ? 1 : 0;
                // transformers' generate: cumsum(mask) - 1, padding slots filled with 1.
                positions[b, t] = real ? t - pads[b] : 1;
            }
        return (ids, mask, positions);
    }

    private static long[,] Slice(long[,] a, int row, int from, int length)
    {
        var result = new long[1, length];
        for (int t = 0; t < length; t++) result[0, t] = a[row, from + t];
        return result;
    }

    [TestCaseSource(nameof(SharedConfigs))]
    public void Agrees_with_ReferenceDecoder(string json)
    {
        var weights = HfWeights.Random(json, seed: 5);
        var (ids, mask, positions) = Batch(10, HfSpec.Parse(json).VocabSize, seed: 3, 0, 3);

        double[] ours = new HfReference(json, weights).Forward(ids, mask, positions);
        float[] theirs = new ReferenceDecoder(DecoderConfig.FromHuggingFace(json), weights).Forward(ids, mask, positions);

        // ReferenceDecoder rounds its double logits to float; agreement to that rounding means the two
        // double computations agree far below 1e-9.
        Assert.That(ours, Has.Length.EqualTo(theirs.Length));
        double worst = 0;
        for (int i = 0; i < ours.Length; i++)
            worst = Math.Max(worst, Math.Abs(ours[i] - theirs[i]) / (Math.Abs(theirs[i]) * 6e-8 + 1e-30));
        Assert.That(worst, Is.LessThanOrEqualTo(1.0), "difference beyond float rounding of ReferenceDecoder's logits");
        Assert.That(ours.Max(Math.Abs), Is.GreaterThan(0.1), "logits are not trivially small");
    }

    [TestCaseSource(nameof(PaddingCases))]
    public void Left_padding_leaves_each_rows_logits_unchanged(string json)
    {
        var spec = HfSpec.Parse(json);
        var weights = HfWeights.Random(json, seed: 9);
        var reference = new HfReference(spec, weights);
        // 12 slots; row 1 has 3 pads and 9 real tokens, so both rows pass every window and (for the longrope
        // configs) both alone and batched the largest position exceeds original_max_position_embeddings.
        const int length = 12;
        var (ids, mask, positions) = Batch(length, spec.VocabSize, seed: 21, 0, 3);
        double[] batched = reference.Forward(ids, mask, positions);

        int vocab = spec.VocabSize;
        foreach (var (row, pad) in new[] { (0, 0), (1, 3) })
        {
            int real = length - pad;
            double[] alone = reference.Forward(Slice(ids, row, pad, real), Slice(mask, row, pad, real), Slice(positions, row, pad, real));
            double worst = 0;
            for (int t = 0; t < real; t++)
                for (int v = 0; v < vocab; v++)
                    worst = Math.Max(worst, Math.Abs(batched[((long)row * length + pad + t) * vocab + v] - alone[(long)t * vocab + v]));
            Assert.That(worst, Is.LessThan(1e-12), $"row {row}");
        }
    }

    [TestCaseSource(nameof(WindowCases))]
    public void A_one_layer_model_sees_exactly_its_window(string json)
    {
        // One layer, and that layer sliding wherever the family has a window: changing the token in slot j
        // changes the logits of slot i exactly when j <= i and i - j < W (transformers: kv_idx > q_idx - W).
        // layer_types (GPT-OSS's config names one per layer) gives way to the config class's default for one layer.
        string oneLayer = HfTestConfigs.With(json, ("num_hidden_layers", 1), ("max_window_layers", 0), ("layer_types", null));
        var spec = HfSpec.Parse(oneLayer);
        int? window = spec.LayerWindows[0];
        var reference = new HfReference(spec, HfWeights.Random(spec, seed: 4));
        const int length = 10, changed = 3;
        var (ids, mask, positions) = Batch(length, spec.VocabSize, seed: 8, 0);
        double[] before = reference.Forward(ids, mask, positions);
        ids[0, changed] = (ids[0, changed] + 1) % spec.VocabSize;
        double[] after = reference.Forward(ids, mask, positions);

        for (int i = 0; i < length; i++)
        {
            double change = 0;
            for (int v = 0; v < spec.VocabSize; v++) change = Math.Max(change, Math.Abs(before[i * spec.VocabSize + v] - after[i * spec.VocabSize + v]));
            bool sees = changed <= i && (window is not { } w || i - changed < w);
            if (sees) Assert.That(change, Is.GreaterThan(1e-9), $"slot {i} must see slot {changed} (window {window})");
            else Assert.That(change, Is.EqualTo(0), $"slot {i} must not see slot {changed} (window {window})");
        }
    }

    private static IEnumerable<TestCaseData> LongropeCases() =>
        new[] { ("phi3.5-mini", HfTestConfigs.Phi35Mini), ("phi4-mini", HfTestConfigs.Phi4Mini) }
            .Select(c => new TestCaseData(c.Item2).SetName($"Longrope_switches_exactly_past_the_original_context({c.Item1})"));

    [TestCaseSource(nameof(LongropeCases))]
    public void Longrope_switches_to_long_factors_exactly_when_the_length_passes_the_original_context(string json)
    {
        // A causal model's logits for a prefix do not depend on later tokens, unless the rotary factors
        // change with the total length: run(L) and run(L - 1) agree on their common slots for every L
        // except L = original_max_position_embeddings + 1 (8 + 1), where the short factors give way.
        var spec = HfSpec.Parse(json);
        Assert.That(spec.Rope.Type, Is.EqualTo("longrope"));
        var reference = new HfReference(spec, HfWeights.Random(spec, seed: 13));
        var (ids, _, _) = Batch(14, spec.VocabSize, seed: 2, 0);
        int vocab = spec.VocabSize;
        double[] previous = reference.Forward(Slice(ids, 0, 0, 1), Inputs.Ones(1, 1), Inputs.Positions(1, 0, 1));
        for (int length = 2; length <= 14; length++)
        {
            double[] current = reference.Forward(Slice(ids, 0, 0, length), Inputs.Ones(1, length), Inputs.Positions(1, 0, length));
            double change = 0;
            for (int i = 0; i < (length - 1) * vocab; i++) change = Math.Max(change, Math.Abs(current[i] - previous[i]));
            if (length == 9) Assert.That(change, Is.GreaterThan(1e-6), $"length {length} crosses original_max_position_embeddings 8");
            else Assert.That(change, Is.LessThan(1e-12), $"length {length}");
            previous = current;
        }
    }

    [Test]
    public void Longrope_factor_choice_follows_the_largest_position_of_the_whole_batch()
    {
        // transformers takes seq_len = max(position_ids) + 1 over the batch: a short row batched with a long
        // one is rotated with the long factors, so it differs from the row alone.
        var spec = HfSpec.Parse(HfTestConfigs.Phi35Mini);
        var reference = new HfReference(spec, HfWeights.Random(spec, seed: 1));
        var (ids, mask, positions) = Batch(12, spec.VocabSize, seed: 6, 0, 6);
        double[] batched = reference.Forward(ids, mask, positions);
        double[] alone = reference.Forward(Slice(ids, 1, 6, 6), Slice(mask, 1, 6, 6), Slice(positions, 1, 6, 6));
        double change = 0;
        for (int t = 0; t < 6; t++)
            for (int v = 0; v < spec.VocabSize; v++)
                change = Math.Max(change, Math.Abs(batched[(12 + 6 + t) * spec.VocabSize + v] - alone[t * spec.VocabSize + v]));
        Assert.That(change, Is.GreaterThan(1e-6));
    }

    [Test]
    public void Longrope_attention_factor_is_the_papers_default_and_rope_scaling_attention_factor_overrides_it()
    {
        var spec = HfSpec.Parse(HfTestConfigs.Phi35Mini);
        // max_position_embeddings / original = 32 / 8 = 4: sqrt(1 + ln 4 / ln 8) = sqrt(5/3).
        Assert.That(spec.Rope.Frequencies(0).Scale, Is.EqualTo(Math.Sqrt(5.0 / 3)).Within(1e-15));
        Assert.That(spec.Rope.Frequencies(20).Scale, Is.EqualTo(Math.Sqrt(5.0 / 3)).Within(1e-15));
        string withFactor = HfTestConfigs.Phi35Mini.Replace("\"type\": \"longrope\",", "\"type\": \"longrope\", \"attention_factor\": 1.25,");
        Assert.That(HfSpec.Parse(withFactor).Rope.Frequencies(0).Scale, Is.EqualTo(1.25));
        // Inverse frequencies divide by the factors: theta^(-2i/dim) / short[i].
        var (inv, _) = spec.Rope.Frequencies(3);
        Assert.That(inv[2], Is.EqualTo(Math.Pow(10000, -4.0 / 8) / 1.1).Within(1e-15));
        var (longInv, _) = spec.Rope.Frequencies(8);
        Assert.That(longInv[3], Is.EqualTo(Math.Pow(10000, -6.0 / 8) / 12.0).Within(1e-15));
    }

    [Test]
    public void Phi3_reads_su_and_yarn_as_longrope_and_checks_the_factor_lengths()
    {
        Assert.That(HfSpec.Parse(HfTestConfigs.Phi4Mini).Rope.Type, Is.EqualTo("longrope"));
        Assert.That(HfSpec.Parse(HfTestConfigs.Phi35Mini.Replace("\"longrope\"", "\"yarn\"")).Rope.Type, Is.EqualTo("longrope"));
        var phi4 = HfSpec.Parse(HfTestConfigs.Phi4Mini);
        Assert.That((phi4.HeadDim, phi4.Rope.Dim), Is.EqualTo((16, 12)), "partial_rotary_factor 0.75 of head_dim 16");
        string wrongLength = HfTestConfigs.Phi35Mini.Replace("[1.0, 1.05, 1.1, 1.3]", "[1.0, 1.05, 1.1]");
        Assert.That(() => HfSpec.Parse(wrongLength), Throws.TypeOf<FormatException>().With.Message.Contains("short_factor"));
        // Without a top-level original_max_position_embeddings, Phi3Config's default 4096 applies.
        string noOriginal = HfTestConfigs.With(HfTestConfigs.Phi35Mini, ("original_max_position_embeddings", null));
        Assert.That(HfSpec.Parse(noOriginal).Rope.OriginalMaxPositions, Is.EqualTo(4096));
    }

    [Test]
    public void Sliding_layers_follow_each_config_class()
    {
        // Gemma 2: even layers slide (layer_types default "sliding_attention" if (i + 1) % 2).
        Assert.That(HfSpec.Parse(HfTestConfigs.Gemma2).LayerWindows, Is.EqualTo(new int?[] { 4, null, 4 }));
        // Qwen3: sliding only with use_sliding_window, on layers i >= max_window_layers.
        Assert.That(HfSpec.Parse(HfTestConfigs.Qwen3SlidingWindow).LayerWindows, Is.EqualTo(new int?[] { null, 4, 4 }));
        string off = HfTestConfigs.With(HfTestConfigs.Qwen3SlidingWindow, ("use_sliding_window", false));
        Assert.That(HfSpec.Parse(off).LayerWindows, Is.EqualTo(new int?[] { null, null, null }));
        // layer_types, where given, decides.
        var explicitTypes = System.Text.Json.Nodes.JsonNode.Parse("""["sliding_attention", "full_attention", "sliding_attention"]""");
        Assert.That(HfSpec.Parse(HfTestConfigs.With(HfTestConfigs.Qwen3SlidingWindow, ("layer_types", explicitTypes))).LayerWindows,
            Is.EqualTo(new int?[] { 4, null, 4 }));
        // Phi-3 and Mistral: every layer; MistralConfig's default window is 4096, an explicit null turns it off.
        Assert.That(HfSpec.Parse(HfTestConfigs.Phi3Mini).LayerWindows, Is.EqualTo(new int?[] { 5, 5 }));
        string noField = HfTestConfigs.Mistral.Replace("\"sliding_window\": 3,", "");
        Assert.That(HfSpec.Parse(noField).LayerWindows, Is.EqualTo(new int?[] { 4096, 4096 }));
        Assert.That(HfSpec.Parse(HfTestConfigs.With(HfTestConfigs.Mistral, ("sliding_window", null))).LayerWindows, Is.EqualTo(new int?[] { null, null }));
    }

    [Test]
    public void Phi3_fused_projections_equal_Mistral_with_the_row_blocks_split_out()
    {
        // Phi-3-mini's layout is Mistral's with q|k|v and gate|up stacked by rows; split them and the two
        // readings must agree exactly (this guards the row offsets of the fused reads).
        var phi = HfSpec.Parse(HfTestConfigs.Phi3Mini);
        string mistralJson = HfTestConfigs.With(HfTestConfigs.Mistral, ("intermediate_size", 48), ("num_key_value_heads", 4),
            ("vocab_size", 64), ("rope_theta", 10000.0), ("sliding_window", 5), ("head_dim", null));
        var mistral = HfSpec.Parse(mistralJson);
        var phiWeights = HfWeights.Random(phi, seed: 12);
        var split = new InMemoryWeights();
        foreach (var name in phiWeights.Names)
        {
            float[] values = phiWeights.Values(name);
            long[] shape = phiWeights.Shape(name);
            void Rows(string target, int from, int count) =>
                split.Add(target, values[(from * (int)shape[1])..((from + count) * (int)shape[1])], count, shape[1]);
            if (name.EndsWith("qkv_proj.weight"))
            {
                string prefix = name[..^"qkv_proj.weight".Length];
                Rows(prefix + "q_proj.weight", 0, 32);
                Rows(prefix + "k_proj.weight", 32, 32);
                Rows(prefix + "v_proj.weight", 64, 32);
            }
            else if (name.EndsWith("gate_up_proj.weight"))
            {
                string prefix = name[..^"gate_up_proj.weight".Length];
                Rows(prefix + "gate_proj.weight", 0, 48);
                Rows(prefix + "up_proj.weight", 48, 48);
            }
            else split.Add(name, values, shape);
        }
        Assert.That(split.Names.OrderBy(n => n), Is.EqualTo(HfWeights.Expected(mistral).Select(t => t.Name).OrderBy(n => n)));
        var (ids, mask, positions) = Batch(10, 64, seed: 4, 0, 2);
        double[] a = new HfReference(phi, phiWeights).Forward(ids, mask, positions);
        double[] b = new HfReference(mistral, split).Forward(ids, mask, positions);
        Assert.That(a.Zip(b, (x, y) => Math.Abs(x - y)).Max(), Is.LessThan(1e-12));
    }

    [Test]
    public void Absent_fields_take_the_config_classes_defaults()
    {
        static string Without(string json, params string[] fields)
        {
            var root = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
            foreach (var field in fields) root.Remove(field);
            return root.ToJsonString();
        }
        // Qwen3Config: head_dim 128 (not hidden / heads), tie_word_embeddings false.
        var qwen = HfSpec.Parse(Without(HfTestConfigs.Qwen3, "head_dim", "tie_word_embeddings"));
        Assert.That((qwen.HeadDim, qwen.TieWordEmbeddings), Is.EqualTo((128, false)));
        // Gemma2Config: head_dim 256, query_pre_attn_scalar 256, caps 50 / 30, tied, gelu_pytorch_tanh.
        var gemma = HfSpec.Parse(Without(HfTestConfigs.Gemma2, "head_dim", "query_pre_attn_scalar", "attn_logit_softcapping",
            "final_logit_softcapping", "tie_word_embeddings", "hidden_activation", "sliding_window"));
        Assert.That((gemma.HeadDim, gemma.AttentionScale, gemma.AttentionSoftcap, gemma.FinalLogitSoftcap, gemma.TieWordEmbeddings),
            Is.EqualTo((256, 1.0 / 16, (double?)50.0, (double?)30.0, true)));
        Assert.That(gemma.Activation, Is.EqualTo("gelu_pytorch_tanh"));
        Assert.That(gemma.LayerWindows[0], Is.EqualTo(4096));
        // Phi3Config: rms_norm_eps 1e-5, head_dim = hidden / heads; an explicit null soft-cap turns Gemma's off.
        Assert.That(HfSpec.Parse(Without(HfTestConfigs.Phi3Mini, "rms_norm_eps")).RmsNormEps, Is.EqualTo(1e-5));
        Assert.That(HfSpec.Parse(HfTestConfigs.Phi3Mini).HeadDim, Is.EqualTo(8));
        Assert.That(HfSpec.Parse(HfTestConfigs.With(HfTestConfigs.Gemma2, ("attn_logit_softcapping", null))).AttentionSoftcap, Is.Null);
    }

    [Test]
    public void Gemma2_final_softcap_bounds_the_logits_and_is_tanh_of_the_uncapped_logits()
    {
        var reference = new HfReference(HfTestConfigs.Gemma2TightSoftcaps, HfWeights.Random(HfTestConfigs.Gemma2TightSoftcaps, seed: 3));
        string uncappedJson = HfTestConfigs.With(HfTestConfigs.Gemma2TightSoftcaps, ("final_logit_softcapping", null));
        var uncapped = new HfReference(uncappedJson, HfWeights.Random(uncappedJson, seed: 3));
        var (ids, mask, positions) = Batch(8, 64, seed: 5, 0);
        double[] capped = reference.Forward(ids, mask, positions), raw = uncapped.Forward(ids, mask, positions);

        Assert.That(capped.Max(Math.Abs), Is.LessThanOrEqualTo(2.0));
        Assert.That(raw.Max(Math.Abs), Is.GreaterThan(2.0), "the cap bites on these weights");
        for (int i = 0; i < raw.Length; i++) Assert.That(capped[i], Is.EqualTo(2.0 * Math.Tanh(raw[i] / 2.0)).Within(1e-12));
    }

    [Test]
    public void Gemma2_attention_softcap_changes_the_logits()
    {
        string json = HfTestConfigs.Gemma2TightSoftcaps;
        string noCap = HfTestConfigs.With(json, ("attn_logit_softcapping", null));
        var (ids, mask, positions) = Batch(8, 64, seed: 5, 0);
        double[] a = new HfReference(json, HfWeights.Random(json, 3)).Forward(ids, mask, positions);
        double[] b = new HfReference(noCap, HfWeights.Random(noCap, 3)).Forward(ids, mask, positions);
        Assert.That(a.Zip(b, (x, y) => Math.Abs(x - y)).Max(), Is.GreaterThan(1e-4));
    }

    [Test]
    public void Qwen3_q_and_k_norms_make_attention_blind_to_the_scale_of_q_proj_and_k_proj()
    {
        // A negligible eps, so that RMSNorm is exactly scale-free.
        var spec = HfSpec.Parse(HfTestConfigs.With(HfTestConfigs.Qwen3, ("rms_norm_eps", 1e-15)));
        var weights = HfWeights.Random(spec, seed: 17);
        var (ids, mask, positions) = Batch(8, spec.VocabSize, seed: 1, 0);
        double[] before = new HfReference(spec, weights).Forward(ids, mask, positions);
        foreach (var name in weights.Names.Where(n => n.EndsWith("q_proj.weight") || n.EndsWith("k_proj.weight")).ToList())
            weights.Add(name, weights.Values(name).Select(v => v * 8).ToArray(), weights.Shape(name));
        double[] after = new HfReference(spec, weights).Forward(ids, mask, positions);
        Assert.That(before.Zip(after, (x, y) => Math.Abs(x - y)).Max(), Is.LessThan(1e-10));

        // Without the norms (a llama reading of the same tensors) the scale would matter.
        var plain = spec with { QkNorm = false };
        double[] plainBefore = new HfReference(plain, HfWeights.Random(spec, seed: 17)).Forward(ids, mask, positions);
        double[] plainAfter = new HfReference(plain, weights).Forward(ids, mask, positions);
        Assert.That(plainBefore.Zip(plainAfter, (x, y) => Math.Abs(x - y)).Max(), Is.GreaterThan(1e-3));
    }

    [TestCaseSource(nameof(WeightCases))]
    public void Random_weights_cover_exactly_what_the_reference_reads(string json)
    {
        var spec = HfSpec.Parse(json);
        var weights = HfWeights.Random(spec, seed: 2);
        var (ids, mask, positions) = Batch(4, spec.VocabSize, seed: 1, 0);
        Assert.That(new HfReference(spec, weights).Forward(ids, mask, positions).All(double.IsFinite));
        // Dropping any one tensor makes the reference fail naming it.
        foreach (var missing in HfWeights.Expected(spec).Where((_, i) => i % 5 == 0))
        {
            var partial = new InMemoryWeights();
            foreach (var name in weights.Names.Where(n => n != missing.Name)) partial.Add(name, weights.Values(name), weights.Shape(name));
            Assert.That(() => new HfReference(spec, partial).Forward(ids, mask, positions),
                Throws.TypeOf<KeyNotFoundException>().With.Message.Contains(missing.Name));
        }
    }

    [Test]
    public void Family_tensor_names_match_transformers_modules()
    {
        var phi = HfWeights.Expected(HfTestConfigs.Phi4Mini).ToDictionary(s => s.Name, s => s.Shape);
        // Phi-4-mini-like: q 4*16 + k 2*16 + v 2*16 rows; gate_up 2 * 96; tied (no lm_head).
        Assert.That(phi["model.layers.0.self_attn.qkv_proj.weight"], Is.EqualTo(new long[] { 128, 64 }));
        Assert.That(phi["model.layers.1.mlp.gate_up_proj.weight"], Is.EqualTo(new long[] { 192, 64 }));
        Assert.That(phi.ContainsKey("lm_head.weight"), Is.False);
        var qwen = HfWeights.Expected(HfTestConfigs.Qwen3).ToDictionary(s => s.Name, s => s.Shape);
        Assert.That(qwen["model.layers.2.self_attn.q_norm.weight"], Is.EqualTo(new long[] { 16 }));
        Assert.That(qwen["model.layers.0.self_attn.q_proj.weight"], Is.EqualTo(new long[] { 64, 32 }));
        Assert.That(qwen["model.layers.0.self_attn.o_proj.weight"], Is.EqualTo(new long[] { 32, 64 }));
        Assert.That(qwen.Keys.Any(k => k.EndsWith(".bias")), Is.False);
        var gemma = HfWeights.Expected(HfTestConfigs.Gemma2).Select(s => s.Name).ToHashSet();
        Assert.That(gemma, Does.Contain("model.layers.2.pre_feedforward_layernorm.weight").And.Contain("model.layers.2.post_feedforward_layernorm.weight"));
        Assert.That(gemma, Does.Not.Contain("lm_head.weight"));
        // LlamaAttention puts attention_bias on o_proj too; LlamaMLP puts mlp_bias on gate, up and down.
        string biased = HfTestConfigs.With(HfTestConfigs.Llama, ("attention_bias", true), ("mlp_bias", true));
        var llama = HfWeights.Expected(biased).Select(s => s.Name).ToHashSet();
        Assert.That(llama, Is.SupersetOf(new[] { "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.o_proj.bias",
            "model.layers.1.mlp.gate_proj.bias", "model.layers.1.mlp.up_proj.bias", "model.layers.1.mlp.down_proj.bias" }));
        // Qwen2 hard-codes q/k/v biases and no o_proj bias, whatever attention_bias says.
        var qwen2 = HfWeights.Expected(HfTestConfigs.With(HfTestConfigs.Qwen2, ("attention_bias", true))).Select(s => s.Name).ToHashSet();
        Assert.That(qwen2, Does.Contain("model.layers.0.self_attn.k_proj.bias").And.Not.Contain("model.layers.0.self_attn.o_proj.bias"));
    }

    [Test]
    public void Erf_matches_published_values()
    {
        // Abramowitz and Stegun, Table 7.1.
        Assert.That(HfReference.Erf(0.5), Is.EqualTo(0.5204998778130465).Within(1e-13));
        Assert.That(HfReference.Erf(1.0), Is.EqualTo(0.8427007929497149).Within(1e-13));
        Assert.That(HfReference.Erf(-2.0), Is.EqualTo(-0.9953222650189527).Within(1e-13));
        Assert.That(HfReference.Erf(3.5), Is.EqualTo(0.9999992569016276).Within(1e-13));
    }
}
