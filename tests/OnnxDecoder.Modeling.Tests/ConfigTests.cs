using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>Binding Hugging Face config.json and every validation rule, each with its message.</summary>
public class ConfigTests
{
    private const string Llama = """
        {"model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
         "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": true,
         "bos_token_id": 1, "eos_token_id": 2}
        """;

    private static string With(string json, string field, string value)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        node[field] = value == "<remove>" ? null : System.Text.Json.Nodes.JsonNode.Parse(value);
        if (value == "<remove>") node.Remove(field);
        return node.ToJsonString();
    }

    [Test]
    public void A_llama_config_binds_every_field()
    {
        var c = DecoderConfig.FromHuggingFace(Llama);
        Assert.That((c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize, c.MaxPositions),
            Is.EqualTo((64, 172, 5, 8, 4, 8, 512, 512)));
        Assert.That((c.Norm, c.NormEps, c.Positions, c.RotaryLayout, c.RopeTheta, c.HiddenAct, c.GatedMlp, c.TieWordEmbeddings),
            Is.EqualTo((NormKind.RmsNorm, 1e-5, PositionKind.Rotary, RotaryLayout.HalfSplit, 10000.0, Activation.Silu, true, true)));
        Assert.That((c.BosTokenId, c.EosTokenIds.Single(), c.IsMoe, c.SlidingWindow), Is.EqualTo((1, 2, false, (int?)null)));
    }

    [Test]
    public void Mixtral_qwen2_and_gpt2_fields_bind()
    {
        var mixtral = DecoderConfig.FromHuggingFace(With(With(With(With(Llama, "model_type", "\"mixtral\""), "num_local_experts", "8"), "num_experts_per_tok", "2"), "sliding_window", "4096"));
        Assert.That((mixtral.NumExperts, mixtral.ExpertsPerToken, mixtral.NormTopKProb, mixtral.SlidingWindow), Is.EqualTo((8, 2, true, (int?)4096)));

        var qwen = DecoderConfig.FromHuggingFace(With(With(Llama, "model_type", "\"qwen2\""), "eos_token_id", "[2, 7]"));
        Assert.That((qwen.AttentionBias, qwen.EosTokenIds), Is.EqualTo((true, new[] { 2, 7 })));

        var gpt2 = DecoderConfig.FromHuggingFace("""
            {"model_type": "gpt2", "n_embd": 48, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 100,
             "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "bos_token_id": 99, "eos_token_id": 99}
            """);
        Assert.That((gpt2.Norm, gpt2.Positions, gpt2.GatedMlp, gpt2.HiddenAct, gpt2.IntermediateSize, gpt2.TieWordEmbeddings, gpt2.AttentionBias, gpt2.HeadDim),
            Is.EqualTo((NormKind.LayerNorm, PositionKind.Learned, false, Activation.GeluTanh, 192, true, true, 12)));
    }

    [Test]
    public void Qwen2_moe_fields_bind()
    {
        var json = With(With(With(With(With(With(Llama, "model_type", "\"qwen2_moe\""), "num_experts", "8"), "num_experts_per_tok", "2"),
            "moe_intermediate_size", "64"), "shared_expert_intermediate_size", "128"), "intermediate_size", "256");
        var c = DecoderConfig.FromHuggingFace(json);
        Assert.That((c.NumExperts, c.ExpertsPerToken, c.IntermediateSize, c.SharedExpertIntermediateSize, c.NormTopKProb, c.AttentionBias),
            Is.EqualTo((8, 2, 64, 128, false, true)));
    }

    [Test]
    public void Caps_on_heads_head_dim_and_experts()
    {
        Assert.That(() => (TestConfigs.Base with { NumHeads = 4096, NumKvHeads = 1 }).Validate(), Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: num_attention_heads (4096) exceeds the cap of 2048"));
        Assert.That(() => (TestConfigs.Base with { HeadDim = 8192 }).Validate(), Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: head_dim (8192) exceeds the cap of 4096"));
        Assert.That(() => (TestConfigs.Base with { ModelType = "mixtral", NumExperts = 5000, ExpertsPerToken = 2 }).Validate(), Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: num_local_experts (5000) exceeds the cap of 1024"));
    }

    [Test]
    public void Rules_reached_only_with_head_dim_given_or_other_families()
    {
        Assert.That(() => DecoderConfig.FromHuggingFace(With(With(Llama, "head_dim", "8"), "num_attention_heads", "0")),
            Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: num_attention_heads (0) must be positive"));
        var gpt2 = """{"model_type": "gpt2", "n_embd": 48, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 100, "layer_norm_epsilon": 0, "bos_token_id": 99, "eos_token_id": 99}""";
        Assert.That(() => DecoderConfig.FromHuggingFace(gpt2), Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: layer_norm_epsilon (0) must be a positive number"));
        Assert.That(() => DecoderConfig.FromHuggingFace(With(Llama, "rope_scaling", """{"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 0}""")),
            Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: rope_scaling.original_max_position_embeddings must be positive"));
        Assert.That(() => DecoderConfig.FromHuggingFace(With(Llama, "rope_scaling", """{"rope_type": "yarn", "factor": 4, "attention_factor": -1}""")),
            Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: rope_scaling.attention_factor must be positive"));
        Assert.That(() => (TestConfigs.Base with { SharedExpertIntermediateSize = 16 }).Validate(),
            Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: shared_expert_intermediate_size needs a mixture-of-experts model (num_experts)"));
        Assert.That(() => (TestConfigs.Base with { ModelType = "qwen2_moe", NumExperts = 4, ExpertsPerToken = 1, SharedExpertIntermediateSize = -1 }).Validate(),
            Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: shared_expert_intermediate_size (-1) must be between 0 and 1048576"));
    }

    [Test]
    public void Rope_scaling_blocks_bind()
    {
        var llama3 = DecoderConfig.FromHuggingFace(With(Llama, "rope_scaling",
            """{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}"""));
        Assert.That(llama3.RopeScaling, Is.EqualTo(new RopeScaling { Type = RopeScalingType.Llama3, Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositions = 256 }));
        var yarn = DecoderConfig.FromHuggingFace(With(Llama, "rope_scaling", """{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}"""));
        Assert.That((yarn.RopeScaling.Type, yarn.RopeScaling.Factor, yarn.RopeScaling.OriginalMaxPositions), Is.EqualTo((RopeScalingType.Yarn, 4.0, (int?)128)));
        Assert.That(DecoderConfig.FromHuggingFace(With(Llama, "rope_scaling", """{"type": "dynamic", "factor": 2}""")).RopeScaling.Type, Is.EqualTo(RopeScalingType.Dynamic));
        Assert.That(DecoderConfig.FromHuggingFace(With(Llama, "rope_scaling", """{"rope_type": "linear", "factor": 2}""")).RopeScaling.Type, Is.EqualTo(RopeScalingType.Linear));
    }

    // Each validation rule, with the exact message a user sees.
    [TestCase("model_type", "\"bloom\"", "config.json: model_type 'bloom' is not supported (supported: llama, mistral, qwen2, mixtral, qwen2_moe, gpt2, qwen3, phi3, gemma2, granite, olmo2, smollm3, gemma3_text, phi, qwen3_moe, gpt_oss, gemma, starcoder2)")]
    [TestCase("hidden_size", "0", "config.json: hidden_size (0) must be positive")]
    [TestCase("hidden_size", "60", "config.json: hidden_size (60) must be divisible by num_attention_heads (8) when head_dim is not given")]
    [TestCase("hidden_size", "<remove>", "config.json: hidden_size is missing")]
    [TestCase("intermediate_size", "-1", "config.json: intermediate_size (-1) must be positive")]
    [TestCase("num_hidden_layers", "0", "config.json: num_hidden_layers (0) must be positive")]
    [TestCase("num_attention_heads", "0", "config.json: hidden_size (64) must be divisible by num_attention_heads (0) when head_dim is not given")]
    [TestCase("num_key_value_heads", "3", "config.json: num_key_value_heads (3) must divide num_attention_heads (8)")]
    [TestCase("num_key_value_heads", "0", "config.json: num_key_value_heads (0) must be positive")]
    [TestCase("head_dim", "-8", "config.json: head_dim (-8) must be positive")]
    [TestCase("vocab_size", "0", "config.json: vocab_size (0) must be positive")]
    [TestCase("vocab_size", "\"512\"", "config.json: vocab_size (\"512\") must be a whole number that fits in 32 bits")]
    [TestCase("vocab_size", "4294967296", "config.json: vocab_size (4294967296) must be a whole number that fits in 32 bits")]
    [TestCase("max_position_embeddings", "0", "config.json: max_position_embeddings (0) must be positive")]
    [TestCase("rms_norm_eps", "0", "config.json: rms_norm_eps (0) must be a positive number")]
    [TestCase("rope_theta", "-1", "config.json: rope_theta (-1) must be positive")]
    [TestCase("partial_rotary_factor", "1.5", "config.json: partial_rotary_factor (1.5) must be in (0, 1]")]
    [TestCase("partial_rotary_factor", "0.3", "config.json: partial_rotary_factor (0.3) x head_dim (8) must be a positive even whole number of rotary dimensions")]
    [TestCase("hidden_act", "\"relu2\"", "config.json: hidden_act 'relu2' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh)")]
    [TestCase("tie_word_embeddings", "1", "config.json: tie_word_embeddings (1) must be true or false")]
    [TestCase("num_experts_per_tok", "3", "config.json: num_local_experts (0) must be positive when num_experts_per_tok is set")]
    [TestCase("bos_token_id", "512", "config.json: bos_token_id (512) must be a token id below vocab_size (512)")]
    [TestCase("eos_token_id", "[2, 600]", "config.json: eos_token_id (600) must be a token id below vocab_size (512)")]
    [TestCase("eos_token_id", "[]", "config.json: eos_token_id must be a token id or a list of 1 to 64 token ids")]
    [TestCase("rope_scaling", "{\"type\": \"ntk-by-parts\", \"factor\": 2}", "config.json: rope_scaling.rope_type 'ntk-by-parts' is not supported (linear, dynamic, llama3, yarn)")]
    [TestCase("rope_scaling", "{\"type\": \"linear\"}", "config.json: rope_scaling.factor is missing")]
    [TestCase("rope_scaling", "{\"type\": \"linear\", \"factor\": 0.5}", "config.json: rope_scaling.factor (0.5) must be at least 1")]
    [TestCase("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8}", "config.json: rope_scaling.original_max_position_embeddings is required for llama3 scaling and must be positive")]
    [TestCase("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8, \"original_max_position_embeddings\": 64, \"low_freq_factor\": 4, \"high_freq_factor\": 1}", "config.json: rope_scaling.high_freq_factor (1) must exceed low_freq_factor (4), which must be positive")]
    [TestCase("rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4, \"beta_fast\": 1, \"beta_slow\": 2}", "config.json: rope_scaling.beta_fast (1) must exceed beta_slow (2), which must be positive")]
    [TestCase("rope_scaling", "[1]", "config.json: rope_scaling must be an object or null")]
    [TestCase("hidden_size", "262144", "config.json: hidden_size (262144) exceeds the cap of 131072")]
    [TestCase("intermediate_size", "2000000", "config.json: intermediate_size (2000000) exceeds the cap of 1048576")]
    [TestCase("num_hidden_layers", "134217729", "config.json: num_hidden_layers (134217729) exceeds the cap of 1024")]
    [TestCase("vocab_size", "5000000", "config.json: vocab_size (5000000) exceeds the cap of 4194304")]
    [TestCase("max_position_embeddings", "20000000", "config.json: max_position_embeddings (20000000) exceeds the cap of 16777216")]
    public void Each_invalid_field_is_an_error_that_names_it(string field, string value, string message)
    {
        var error = Assert.Throws<ConfigException>(() => DecoderConfig.FromHuggingFace(With(Llama, field, value)));
        Assert.That(error!.Message, Is.EqualTo(message));
    }

    [Test]
    public void A_sliding_window_must_be_positive_where_the_family_uses_one()
    {
        var mistral = With(Llama, "model_type", "\"mistral\"");
        Assert.That(DecoderConfig.FromHuggingFace(With(mistral, "sliding_window", "4096")).SlidingWindow, Is.EqualTo(4096));
        Assert.That(DecoderConfig.FromHuggingFace(With(Llama, "sliding_window", "4096")).SlidingWindow, Is.Null, "llama has no sliding window");
        Assert.That(() => DecoderConfig.FromHuggingFace(With(mistral, "sliding_window", "0")), Throws.TypeOf<ConfigException>()
            .With.Message.EqualTo("config.json: sliding_window (0) must be positive when set"));
    }

    [TestCase("<remove>", 4096, TestName = "Mistral_window_absent_is_MistralConfigs_default_4096")]
    [TestCase("null", null, TestName = "Mistral_window_null_is_no_window")]
    [TestCase("7", 7, TestName = "Mistral_window_given_is_used")]
    public void Mistral_reads_sliding_window_as_MistralConfig_does(string value, int? expected)
    {
        // MistralConfig (configuration_mistral.py) defaults sliding_window to 4096 and has no use_sliding_window switch,
        // so a use_sliding_window false beside it changes nothing; every layer slides.
        var mistral = With(With(Llama, "model_type", "\"mistral\""), "use_sliding_window", "false");
        var c = DecoderConfig.FromHuggingFace(With(mistral, "sliding_window", value));
        Assert.That((c.SlidingWindow, c.SlidingLayers), Is.EqualTo((expected, (bool[]?)null)));
        // The plain-loop Hugging Face reference reads the same window onto each of the 5 layers.
        Assert.That(Reference.HfSpec.Parse(With(mistral, "sliding_window", value)).LayerWindows, Is.EqualTo(Enumerable.Repeat(expected, 5)));
    }

    [Test]
    public void Experts_per_token_above_the_expert_count_is_an_error()
    {
        var json = With(With(With(Llama, "model_type", "\"mixtral\""), "num_local_experts", "4"), "num_experts_per_tok", "5");
        Assert.That(() => DecoderConfig.FromHuggingFace(json), Throws.TypeOf<ConfigException>()
            .With.Message.EqualTo("config.json: num_experts_per_tok (5) must be between 1 and num_local_experts (4)"));
    }

    [Test]
    public void Invalid_json_and_a_non_object_are_errors_that_name_the_file()
    {
        Assert.That(() => DecoderConfig.FromHuggingFace("{\"model_type\": ", "/models/x/config.json"),
            Throws.TypeOf<ConfigException>().With.Message.StartsWith("/models/x/config.json: (document) is not valid JSON"));
        Assert.That(() => DecoderConfig.FromHuggingFace("[]"), Throws.TypeOf<ConfigException>().With.Message.EqualTo("config.json: (document) must be a JSON object"));
    }

    [Test]
    public void Rules_also_hold_for_configs_built_in_code()
    {
        var config = TestConfigs.Base with { NumKvHeads = 3 };
        Assert.That(() => config.Validate("synth preset"), Throws.TypeOf<ConfigException>().With.Message.EqualTo("synth preset: num_key_value_heads (3) must divide num_attention_heads (4)"));
    }
}
