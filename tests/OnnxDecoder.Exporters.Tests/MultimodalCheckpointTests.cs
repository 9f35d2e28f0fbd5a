using System.Text.Json.Nodes;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>
/// The text decoder of multimodal checkpoints (gemma3, mistral3, llava with a llama or a qwen2 text_config): a synth text checkpoint re-saved as the
/// wrapper saves it (config.json with text_config + vision_config, the text tensors under the wrapper's prefixes,
/// vision tower and projector tensors beside them) exports to the same logits as the plain text checkpoint, whose
/// exports the suite checks against the plain-loop reference. Defaults a sparse text_config leaves out are the text
/// config classes' (transformers' configuration_gemma3.py / configuration_llama.py), and hostile layouts are refused
/// naming the tensor or field.
/// </summary>
public class MultimodalCheckpointTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("multimodal");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    /// <summary>The wrappers' two layouts: the original releases' and the one transformers 4.52+ saves.</summary>
    public enum Layout { LanguageModelFirst, ModelFirst }

    [TestCase("gemma3-tiny", "gemma3", "Gemma3ForConditionalGeneration", null, Layout.LanguageModelFirst)]
    [TestCase("gemma3-tiny", "gemma3", "Gemma3ForConditionalGeneration", "gemma3_text", Layout.ModelFirst)]
    [TestCase("llama-tiny", "mistral3", "Mistral3ForConditionalGeneration", "mistral", Layout.ModelFirst)]
    [TestCase("llama-tiny", "llava", "LlavaForConditionalGeneration", "llama", Layout.LanguageModelFirst)]
    [TestCase("llama-tiny", "llava", "LlavaForConditionalGeneration", "qwen2", Layout.ModelFirst)]
    public void The_text_decoder_exports_to_the_logits_of_the_plain_text_checkpoint(string preset, string wrapper, string architecture,
        string? textModelType, Layout layout)
    {
        // mistral3 and llava: an untied head (Mistral Small's, llava-1.5's), so both layouts' lm_head prefixes are exercised.
        bool untied = wrapper != "gemma3";
        string plain = WritePlain(preset, textModelType ?? (preset == "gemma3-tiny" ? "gemma3_text" : "llama"), untied);
        string wrapped = Path.Combine(_root, "wrapped");
        WriteWrapped(plain, wrapped, wrapper, architecture, textModelType, layout);

        string plainOut = Path.Combine(_root, "plain-out"), wrappedOut = Path.Combine(_root, "wrapped-out");
        using (var checkpoint = Checkpoint.Open(plain)) ModelFolderWriter.Write(plainOut, checkpoint, new ExportOptions());
        using (var checkpoint = Checkpoint.Open(wrapped))
        {
            Assert.That(checkpoint.TextDecoderOf, Does.StartWith($"text decoder of a {wrapper} ({architecture}) checkpoint; vision tower and projector not exported (3 tensors skipped)"));
            Assert.That(checkpoint.TextDecoderOf, Does.EndWith("top-level fields not read: image_token_index, vision_config"));
            Assert.That(checkpoint.Weights.Names.Where(n => !n.StartsWith("model.", StringComparison.Ordinal) && n != "lm_head.weight"), Is.Empty);
            // A qwen2 text decoder (llava-onevision's, LLaVA-NeXT's Qwen2 variants) keeps Qwen2's q/k/v biases under the wrapper's prefix.
            if (textModelType == "qwen2")
                Assert.That(checkpoint.Weights.Names.Count(n => n.EndsWith("_proj.bias", StringComparison.Ordinal)), Is.EqualTo(3 * checkpoint.Config.NumLayers));
            ModelFolderWriter.Write(wrappedOut, checkpoint, new ExportOptions());
        }

        long[] ids = [3, 17, 200, 45, 9, 311, 77, 5, 128, 64, 2, 400, 33, 19, 250, 101, 7, 88, 420];   // past gemma3-tiny's window of 16
        var expected = Logits(plainOut, ids);
        var actual = Logits(wrappedOut, ids);
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        Assert.That(actual.Zip(expected, (a, e) => Math.Abs(a - e)).Max(), Is.LessThanOrEqualTo(1e-5f));
        Assert.That(Genai(wrappedOut)["model"]!["type"]!.GetValue<string>(), Is.EqualTo(Genai(plainOut)["model"]!["type"]!.GetValue<string>()));
        Assert.That(File.ReadAllText(Path.Combine(wrappedOut, "tokenizer.json")), Is.EqualTo(File.ReadAllText(Path.Combine(plainOut, "tokenizer.json"))));
        Assert.That(Cli.Inspection.Describe(wrappedOut), Does.Contain($"metadata {GraphContract.Metadata.TextDecoderOf} = text decoder of a {wrapper} ({architecture}) checkpoint"));
    }

    [Test]
    public void Inspect_says_only_the_text_decoder_is_exported()
    {
        string wrapped = Path.Combine(_root, "wrapped");
        WriteWrapped(WritePlain("gemma3-tiny", "gemma3_text", untied: false), wrapped, "gemma3", "Gemma3ForConditionalGeneration", "gemma3_text", Layout.ModelFirst);
        string text = Cli.Inspection.Describe(wrapped);
        Assert.That(text, Does.Contain("text decoder of a gemma3 (Gemma3ForConditionalGeneration) checkpoint; vision tower and projector not exported"));
        Assert.That(text, Does.Contain("family gemma3,"));
    }

    /// <summary>gemma-3-4b's text_config gives only what differs from Gemma3TextConfig's defaults, and its stop tokens at
    /// the top level; the expected values are Gemma3TextConfig's __init__ defaults (configuration_gemma3.py).</summary>
    [Test]
    public void A_sparse_gemma3_text_config_takes_Gemma3TextConfig_defaults_and_the_top_level_stop_tokens()
    {
        var read = HuggingFaceConfig.ReadCheckpoint("""
            {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "boi_token_index": 255999, "eoi_token_index": 256000,
             "eos_token_id": [1, 106], "image_token_index": 262144, "mm_tokens_per_image": 256,
             "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
                             "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
             "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152}}
            """);
        var c = read.Decoder;
        Assert.That((c.ModelType, c.HiddenSize, c.IntermediateSize, c.NumLayers), Is.EqualTo(("gemma3_text", 2560, 10240, 34)));
        Assert.That((c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize, c.MaxPositions), Is.EqualTo((8, 4, 256, 262208, 131072)));
        Assert.That((c.BosTokenId, c.TieWordEmbeddings, c.SlidingWindow, c.LocalRopeTheta, c.RopeTheta), Is.EqualTo((2, true, 1024, 10000.0, 1000000.0)));
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 1, 106 }));
        Assert.That(c.AttentionScale, Is.EqualTo(1 / Math.Sqrt(256)).Within(1e-12));
        Assert.That(c.SlidingLayers, Is.EqualTo(Enumerable.Range(0, 34).Select(i => (i + 1) % 6 != 0)));
        Assert.That(read.Wrapper!.ModelType, Is.EqualTo("gemma3"));
        Assert.That(read.UnreadFields, Is.EqualTo(new[] { "boi_token_index", "eoi_token_index", "image_token_index", "mm_tokens_per_image", "vision_config" }));
    }

    /// <summary>llava-1.5's text_config names little more than its vocabulary: the rest is LlamaConfig's defaults
    /// (configuration_llama.py), and a missing model_type is LlavaConfig's default, llama.</summary>
    [Test]
    public void A_sparse_llava_text_config_takes_LlamaConfig_defaults()
    {
        var c = HuggingFaceConfig.Read("""
            {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "image_token_index": 32000, "pad_token_id": 32001,
             "text_config": {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "vocab_size": 32064},
             "vision_config": {"model_type": "clip_vision_model"}}
            """);
        Assert.That((c.ModelType, c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim),
            Is.EqualTo(("llama", 4096, 11008, 32, 32, 32, 128)));
        Assert.That((c.VocabSize, c.MaxPositions, c.NormEps, c.TieWordEmbeddings, c.BosTokenId), Is.EqualTo((32064, 4096, 1e-5, false, 1)));
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 2 }));
    }

    [TestCase("""{"model_type": "gemma3", "text_config": [1, 2]}""", "config.json: text_config must be an object (the text decoder's config), not array")]
    [TestCase("""{"model_type": "mistral3", "vision_config": {}}""", "config.json: text_config is missing: a mistral3 checkpoint's text decoder is described there")]
    [TestCase("""{"model_type": "llava", "text_config": {"model_type": "bloom", "hidden_size": 64}}""",
        "config.json: text_config.model_type 'bloom' is not supported inside a llava checkpoint (supported: llama, mistral, qwen2)")]
    [TestCase("""{"model_type": "gemma3", "text_config": {"model_type": "gemma2"}}""",
        "config.json: text_config.model_type 'gemma2' is not supported inside a gemma3 checkpoint (supported: gemma3_text)")]
    [TestCase("""{"model_type": "llava", "text_config": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3}}""",
        "config.json: text_config.num_key_value_heads (3) must divide num_attention_heads (4)")]
    [TestCase("""{"model_type": "mistral3", "text_config": {"rope_scaling": {"rope_type": "su"}}}""",
        "config.json: text_config.rope_scaling.rope_type 'su' is not supported")]
    [TestCase("""{"model_type": "llava", "eos_token_id": 40000, "text_config": {}}""", "config.json: eos_token_id (40000) must be a token id below vocab_size (32000)")]
    public void A_bad_wrapper_config_names_the_field(string json, string message)
    {
        var error = Assert.Throws<ConfigException>(() => HuggingFaceConfig.Read(json))!;
        Assert.That(error.Message, Does.StartWith(message));
    }

    [Test]
    public void A_tensor_under_both_prefixes_is_refused_naming_both()
    {
        string wrapped = Path.Combine(_root, "wrapped");
        WriteWrapped(WritePlain("gemma3-tiny", "gemma3_text", untied: false), wrapped, "gemma3", "Gemma3ForConditionalGeneration", null, Layout.ModelFirst,
            extra: tensors => tensors.Add(("language_model.model.norm.weight", TensorData.From<float>(new float[64], [64]))));
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(wrapped).Dispose())!;
        Assert.That(error.Message, Does.Contain("model.safetensors"));
        Assert.That(error.Message, Does.Contain("'model.language_model.norm.weight'").And.Contain("'language_model.model.norm.weight'")
            .And.Contain("are both the text decoder's 'model.norm.weight'"));
    }

    [Test]
    public void A_missing_text_tensor_is_named_with_the_names_looked_for()
    {
        string wrapped = Path.Combine(_root, "wrapped");
        WriteWrapped(WritePlain("llama-tiny", "llama", untied: false), wrapped, "llava", "LlavaForConditionalGeneration", null, Layout.LanguageModelFirst,
            drop: "language_model.model.layers.1.mlp.up_proj.weight");
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(wrapped).Dispose())!;
        Assert.That(error.Message, Does.StartWith(wrapped));
        Assert.That(error.Message, Does.EndWith("text decoder tensor 'model.layers.1.mlp.up_proj.weight' (shape [172, 64]) is missing: "
            + "neither 'language_model.model.layers.1.mlp.up_proj.weight' nor 'model.language_model.layers.1.mlp.up_proj.weight' is stored"));
    }

    [Test]
    public void A_missing_untied_head_is_named_with_the_names_looked_for()
    {
        string wrapped = Path.Combine(_root, "wrapped");
        WriteWrapped(WritePlain("llama-tiny", "mistral", untied: true), wrapped, "mistral3", "Mistral3ForConditionalGeneration", null, Layout.ModelFirst,
            drop: "lm_head.weight");
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(wrapped).Dispose())!;
        Assert.That(error.Message, Does.EndWith("text decoder tensor 'lm_head.weight' (shape [512, 64]) is missing: "
            + "neither 'language_model.lm_head.weight' nor 'lm_head.weight' is stored"));
    }

    [Test]
    public void A_tensor_under_no_known_prefix_is_refused()
    {
        string wrapped = Path.Combine(_root, "wrapped");
        WriteWrapped(WritePlain("llama-tiny", "llama", untied: false), wrapped, "llava", "LlavaForConditionalGeneration", null, Layout.ModelFirst,
            extra: tensors => tensors.Add(("image_newline", TensorData.From<float>(new float[64], [64]))));
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(wrapped).Dispose())!;
        Assert.That(error.Message, Does.Contain("tensor 'image_newline' is under none of a llava checkpoint's prefixes"));
    }

    /// <summary>Released multimodal checkpoints are sharded: the index is still checked against every shard, the one
    /// holding only the vision tower included, though its tensors are never read.</summary>
    [TestCase(false, null)]
    [TestCase(true, "weight_map places tensor 'vision_tower.vision_model.embeddings.patch_embedding.weight' in shard 'model-00001-of-00002.safetensors'")]
    public void A_sharded_checkpoint_checks_the_vision_shard_against_the_index(bool misplaceVisionTensor, string? problem)
    {
        string wrapped = Path.Combine(_root, "wrapped");
        WriteWrapped(WritePlain("gemma3-tiny", "gemma3_text", untied: false), wrapped, "gemma3", "Gemma3ForConditionalGeneration", null, Layout.LanguageModelFirst);
        string single = Path.Combine(wrapped, "model.safetensors");
        var weightMap = new JsonObject();
        foreach (var (shard, text) in new[] { ("model-00001-of-00002.safetensors", true), ("model-00002-of-00002.safetensors", false) })
        {
            RewriteTensors(single, Path.Combine(wrapped, shard), n => n, null, _ => { }, keep: n => n.StartsWith("language_model.", StringComparison.Ordinal) == text);
            using var file = SafeTensorsFile.Open(Path.Combine(wrapped, shard));
            foreach (var name in file.Entries.Keys)
                weightMap[name] = misplaceVisionTensor && !text && name.Contains("patch_embedding", StringComparison.Ordinal) ? "model-00001-of-00002.safetensors" : shard;
        }
        File.Delete(single);
        File.WriteAllText(Path.Combine(wrapped, SafeTensorsIndex.FileName), new JsonObject { ["weight_map"] = weightMap }.ToJsonString());
        if (problem is null)
        {
            using var checkpoint = Checkpoint.Open(wrapped);
            Assert.That(checkpoint.TextDecoderOf, Does.Contain("(3 tensors skipped)"));
            Assert.That(checkpoint.Weights.Names, Has.Count.EqualTo(Modeling.Families.FamilyRegistry.For(checkpoint.Config).ExpectedWeights(checkpoint.Config).Count));
            return;
        }
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(wrapped).Dispose())!;
        Assert.That(error.Message, Does.Contain(problem).And.Contain("the index and its shards disagree"));
    }

    // ---- checkpoints ----------------------------------------------------------------------------

    /// <summary>A synth text checkpoint as <paramref name="modelType"/>; untied: with its own lm_head.weight.</summary>
    private string WritePlain(string preset, string modelType, bool untied)
    {
        string folder = Path.Combine(_root, "plain");
        SynthPresets.Write(preset, 5, folder);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!.AsObject();
        config["model_type"] = modelType;
        if (modelType == "mistral") config["sliding_window"] = null;   // Mistral Small 3.1's: no window
        // Qwen2Attention always has q/k/v biases (Qwen2Config has no switch for them): the synth llama checkpoint gets them.
        var biases = new List<(string, ITensorSource)>();
        if (modelType == "qwen2")
        {
            var c0 = SynthPresets.Get(preset);
            for (int layer = 0; layer < c0.NumLayers; layer++)
                foreach (var (projection, width) in new[] { ("q_proj", c0.NumHeads), ("k_proj", c0.NumKvHeads), ("v_proj", c0.NumKvHeads) })
                {
                    var spec = new TensorSpec($"model.layers.{layer}.self_attn.{projection}.bias", [width * c0.HeadDim]);
                    biases.Add((spec.Name, SynthPresets.RandomTensor(spec, 11 + biases.Count)));
                }
        }
        if (untied)
        {
            config["tie_word_embeddings"] = false;
            var config0 = SynthPresets.Get(preset);
            var head = new TensorSpec("lm_head.weight", [config0.VocabSize, config0.HiddenSize]);
            biases.Add(("lm_head.weight", SynthPresets.RandomTensor(head, 9)));
        }
        if (biases.Count > 0)
            RewriteTensors(Path.Combine(folder, "model.safetensors"), Path.Combine(folder, "model.safetensors"), n => n, null, tensors => tensors.AddRange(biases));
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        return folder;
    }

    /// <summary>
    /// The plain checkpoint re-saved as a <paramref name="wrapper"/> checkpoint: its config under text_config (model_type
    /// left out when <paramref name="textModelType"/> is null), a vision_config and an image token at the top level, its
    /// tensors under <paramref name="layout"/>'s prefixes, and a vision tower and projector beside them.
    /// </summary>
    private static void WriteWrapped(string plain, string folder, string wrapper, string architecture, string? textModelType, Layout layout,
        string? drop = null, Action<List<(string, ITensorSource)>>? extra = null)
    {
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(plain))
            if (Path.GetFileName(file) is not ("config.json" or "model.safetensors")) File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        var text = JsonNode.Parse(File.ReadAllText(Path.Combine(plain, "config.json")))!.AsObject();
        text.Remove("architectures");
        if (textModelType is null) text.Remove("model_type");
        else text["model_type"] = textModelType;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray(architecture), ["model_type"] = wrapper, ["image_token_index"] = 7, ["text_config"] = text,
            ["vision_config"] = new JsonObject { ["hidden_size"] = 8, ["num_hidden_layers"] = 1, ["patch_size"] = 4 },
            ["torch_dtype"] = "float32", ["transformers_version"] = "4.52.0",
        };
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        string model = layout == Layout.ModelFirst ? "model.language_model." : "language_model.model.";
        string head = layout == Layout.ModelFirst ? "lm_head." : "language_model.lm_head.";
        string vision = layout == Layout.ModelFirst ? "model." : "";
        RewriteTensors(Path.Combine(plain, "model.safetensors"), Path.Combine(folder, "model.safetensors"),
            name => name.StartsWith("model.", StringComparison.Ordinal) ? model + name["model.".Length..] : head + name["lm_head.".Length..], drop,
            tensors =>
            {
                tensors.Add(($"{vision}vision_tower.vision_model.embeddings.patch_embedding.weight", Filled([8, 3, 4, 4], 0.5f)));
                tensors.Add(($"{vision}multi_modal_projector.linear_1.weight", Filled([64, 8], 0.25f)));
                tensors.Add(($"{vision}multi_modal_projector.linear_1.bias", Filled([64], 0.125f)));
                extra?.Invoke(tensors);
            });
    }

    private static ITensorSource Filled(long[] shape, float value) =>
        TensorData.From<float>(Enumerable.Repeat(value, (int)shape.Aggregate(1L, (a, b) => a * b)).ToArray(), shape);

    private static void RewriteTensors(string source, string destination, Func<string, string> rename, string? drop, Action<List<(string, ITensorSource)>> add,
        Func<string, bool>? keep = null)
    {
        var tensors = new List<(string, ITensorSource)>();
        using (var file = SafeTensorsFile.Open(source))
            foreach (var name in file.Entries.Keys.Order(StringComparer.Ordinal))
            {
                string renamed = rename(name);
                if (renamed == drop || keep?.Invoke(name) == false) continue;
                tensors.Add((renamed, TensorData.From<float>(TensorTransforms.ReadFloats(file.Tensor(name)), [.. file.Entries[name].Shape])));
            }
        add(tensors);
        SafeTensorsWriter.Write(destination, tensors);
    }

    // ---- running ----------------------------------------------------------------------------------

    /// <summary>Logits [T, vocab] of ids fed one step a token through the runtime's KV cache.</summary>
    private static float[] Logits(string modelFolder, long[] ids)
    {
        using var session = new DecoderSession(modelFolder);
        var all = new List<float>();
        all.AddRange(session.Append([ids[0]], 1).ToArray());
        for (int t = 1; t < ids.Length; t++) all.AddRange(session.Step([ids[t]]).ToArray());
        return [.. all];
    }

    private static JsonNode Genai(string folder) => JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "genai_config.json")))!;
}
