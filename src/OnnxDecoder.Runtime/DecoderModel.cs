using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime.Memory;

namespace OnnxDecoder.Runtime;

/// <summary>
/// A model folder loaded into one ONNX Runtime session, checked against its genai_config.json.
/// The weights live here once; any number of <see cref="DecoderSession"/>s and a
/// <see cref="ContinuousBatcher"/> run it, each with its own KV cache and IO binding.
/// </summary>
public sealed class DecoderModel : IDisposable
{
    public DecoderModel(string modelFolder, ExecutionProviderOptions? providers = null)
    {
        Folder = ModelFolder.Open(modelFolder);
        providers ??= new ExecutionProviderOptions();
        using var sessionOptions = ExecutionProviders.Create(providers, out var provider);
        Provider = provider;
        try
        {
            // Our kernels are CPU kernels: other providers run the graph on ONNX Runtime's. The library is registered before
            // the graph is read, so a library ONNX Runtime refuses leaves the graph as exported without reading it twice.
            bool native = providers.NativeKernels && provider == ExecutionProvider.Cpu;
            string nativeOff = providers.NativeKernels
                ? $"the {ExecutionProviders.Name(provider)} provider runs ONNX Runtime's kernels" : "NativeKernels is off";
            if (native && Runtime.NativeKernels.IsAvailable && !TryRegisterNativeKernels(sessionOptions, out string refused))
                (native, nativeOff) = (false, refused);
            var form = RuntimeGraph.Read(Folder.ModelPath, providers.DirectGqaLengths, native, providers.NativeMatMul, nativeOff);
            NativeKernels = form.Native;
            if (form.Bytes is null) Session = new InferenceSession(Folder.ModelPath, sessionOptions);
            else
            {
                // From memory, external data is read from the model's folder (the only folder our exports use).
                sessionOptions.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", Path.GetDirectoryName(Folder.ModelPath)!);
                Session = new InferenceSession(form.Bytes, sessionOptions);
                DirectLengths = form.DirectLengths;
            }
        }
        catch (OnnxRuntimeException e) when (e.Message.Contains("EnvCreatedWithGlobalThreadPools", StringComparison.Ordinal))
        {
            throw new InvalidOperationException("ShareThreadPool needs ONNX Runtime's environment to be created by OnnxDecoder first, but other code in this process created it without global thread pools: set ShareThreadPool = false", e);
        }
        catch (OnnxRuntimeException e)
        {
            string kernels = NativeKernels is { Active: true } ? $" (with {NativeKernels}: --native-kernels off, or NativeKernels = false, runs ONNX Runtime's)" : "";
            throw new ModelFormatException(Folder.ModelPath, $"ONNX Runtime could not load the model{kernels}: {e.Message}", e);
        }
        try
        {
            FullLogits = ValidateGraph();
            if (DirectLengths && Session.InputMetadata.TryGetValue(GraphContract.DirectAttentionBias, out var bias)) AttentionBiasType = bias.ElementDataType;
            KvElementType = Session.InputMetadata[Folder.PastKeyName(0)].ElementDataType;
            LogitsElementType = Session.OutputMetadata[GraphContract.Logits].ElementDataType;
            _ = KvCache.SizeOf(KvElementType); // float or float16, else a clear refusal
            // Our exports say how their seqlens_k is computed; a shared-buffer graph from elsewhere (onnxruntime-genai's
            // builder: seqlens_k = ReduceSum(attention_mask) - 1) reads each row's length from its mask, rows starting at 0.
            RowsKeepOwnLengths = Folder.PastPresentShareBuffer
                && (!Session.ModelMetadata.CustomMetadataMap.TryGetValue(GraphContract.Metadata.GqaSeqlensK, out var lengths)
                    || lengths == GraphContract.Metadata.GqaSeqlensKLastAttendedColumn);
            LongRopeSwitch = ReadLongRopeSwitch(Session.ModelMetadata.CustomMetadataMap);
            if (LogitsElementType is not (Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float or Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16))
                throw new ModelFormatException(Folder.ModelPath, $"the graph's logits are {LogitsElementType}; float32 or float16 logits are supported");
            // Device KV needs moves between distinct buffers only: every layout but a shared timeline over one buffer.
            Memory = ModelMemory.Create(Session, Provider, providers.DeviceId,
                deviceKv: RowsKeepOwnLengths || !Folder.PastPresentShareBuffer);
        }
        catch
        {
            Session.Dispose();
            throw;
        }
    }

    /// <summary>Registers our kernels' library; false (with the reason) when ONNX Runtime refuses it, and the graph then
    /// runs on ONNX Runtime's own kernels.</summary>
    private static bool TryRegisterNativeKernels(SessionOptions sessionOptions, out string reason)
    {
        try
        {
            Runtime.NativeKernels.Register(sessionOptions);
            reason = "";
            return true;
        }
        catch (OnnxRuntimeException e)
        {
            reason = $"ONNX Runtime refused {Runtime.NativeKernels.LibraryPath}: {e.Message}";
            return false;
        }
    }

    public ModelFolder Folder { get; }
    public ExecutionProvider Provider { get; }
    public InferenceSession Session { get; }
    /// <summary>Whether logits cover every position ([B, S, V]) rather than only the last.</summary>
    public bool FullLogits { get; }
    /// <summary>The KV cache's element type (float32, or float16 for --precision fp16 exports).</summary>
    public Microsoft.ML.OnnxRuntime.Tensors.TensorElementType KvElementType { get; }
    public Microsoft.ML.OnnxRuntime.Tensors.TensorElementType LogitsElementType { get; }
    /// <summary>
    /// The graph takes each row's length from its attention mask (GroupQueryAttention with a shared
    /// KV buffer, exported with per-row lengths): rows of one batch may hold sequences of different
    /// lengths, each starting at position 0 of its cache row, with no shared timeline.
    /// </summary>
    public bool RowsKeepOwnLengths { get; }
    /// <summary>The session runs the runtime's form of the graph (<see cref="DirectLengthsGraph"/>): the host binds
    /// seqlens_k, total_sequence_length and (when the graph has one) the attention bias, computed from its mask.</summary>
    public bool DirectLengths { get; }
    /// <summary>What our CPU kernels run in this session (<see cref="ExecutionProviderOptions.NativeKernels"/>,
    /// <see cref="ExecutionProviderOptions.NativeMatMul"/>): how many fused nodes, how many MatMulNBits nodes and on which ISA,
    /// or why ONNX Runtime's own kernels run them.</summary>
    public NativeKernelsUse NativeKernels { get; }
    /// <summary>The element type of the direct attention bias input; null when the graph takes none.</summary>
    internal Microsoft.ML.OnnxRuntime.Tensors.TensorElementType? AttentionBiasType { get; }
    /// <summary>The graph reads attention_mask (every graph but the runtime's form, which may still read it elsewhere).</summary>
    public bool HasAttentionMask { get; private set; }
    /// <summary>The graph takes a position_ids input; without one it derives positions itself and none is bound.</summary>
    public bool HasPositionIds { get; private set; }
    /// <summary>
    /// LongRoPE's switch, from the graph's metadata (<see cref="GraphContract.Metadata.LongRopeSwitch"/>): a run whose
    /// largest position + 1 exceeds it rotates with the long factors, else the short ones. Sessions and the batcher
    /// re-run a sequence in one run when its cached keys lie on the other side of the run that reads them, as
    /// transformers' Phi-3 drops its cache when a generation first passes original_max_position_embeddings. Null: a
    /// graph without the entry (no LongRoPE, or exported before it was written), run as it is.
    /// </summary>
    public int? LongRopeSwitch { get; }

    /// <summary>Whether a run whose largest position is <paramref name="longestPosition"/> rotates with the long factors.</summary>
    public bool UsesLongFactors(int longestPosition) => LongRopeSwitch is { } original && longestPosition + 1 > original;

    /// <summary>Positions a run may hold after <paramref name="cached"/> ones and stay on the side of LongRoPE's switch where
    /// its first position lies (int.MaxValue past the switch, or without one): speculative verification stops short of
    /// the switch, so every position it scores is rotated as a run over the sequence up to it would rotate it.</summary>
    public int PositionsBeforeLongRopeSwitch(int cached) =>
        LongRopeSwitch is { } original && cached + 1 <= original ? original - cached : int.MaxValue;

    private int? ReadLongRopeSwitch(IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(GraphContract.Metadata.LongRopeSwitch, out var text)) return null;
        if (!int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int original) || original <= 0)
            throw new ModelFormatException(Folder.ModelPath,
                $"metadata '{GraphContract.Metadata.LongRopeSwitch}' is '{text}', not a positive integer: re-export the model or remove the entry");
        return original;
    }

    /// <summary>The allocators KV caches and logits draw from (device memory under CUDA or DirectML).</summary>
    public ModelMemory Memory { get; }

    /// <summary>A KV cache of <paramref name="rows"/> rows x <paramref name="maxLength"/> positions in the
    /// session's KV memory; the caller disposes it before this model.</summary>
    internal KvCache CreateKvCache(int rows, int maxLength) =>
        new(Memory.Kv, Folder.NumLayers, rows, Folder.NumKvHeads, maxLength, Folder.HeadSize, Folder.PastPresentShareBuffer, KvElementType,
            rebindEachRun: Provider != ExecutionProvider.Cpu && Memory.Kv.IsHostAccessible);

    /// <summary>Checks the graph's inputs and outputs against genai_config.json; returns whether
    /// logits cover every position ([B, S, V]) rather than only the last.</summary>
    private bool ValidateGraph()
    {
        var inputs = Session.InputMetadata;
        var outputs = Session.OutputMetadata;
        string where = Folder.ConfigPath;
        HasAttentionMask = inputs.ContainsKey(GraphContract.AttentionMask);
        foreach (var name in DirectLengths ? [GraphContract.InputIds] : new[] { GraphContract.InputIds, GraphContract.AttentionMask })
            if (!inputs.ContainsKey(name)) throw new ModelFormatException(where, $"the graph has no input '{name}' (inputs: {string.Join(", ", inputs.Keys)})");
        // position_ids is optional (a graph may derive positions from the attention mask), but config and graph must agree.
        HasPositionIds = inputs.ContainsKey(GraphContract.PositionIds);
        if (Folder.PositionIdsName is { } named && (named != GraphContract.PositionIds || !HasPositionIds))
            throw new ModelFormatException(where, $"model.decoder.inputs.position_ids is '{named}' but the graph's inputs are {string.Join(", ", inputs.Keys)}: name '{GraphContract.PositionIds}' or remove the entry");
        if (!outputs.TryGetValue(GraphContract.Logits, out var logits)) throw new ModelFormatException(where, "the graph has no output 'logits'");
        int layers = inputs.Keys.Count(k => k.StartsWith(Folder.PastKeyPattern.Split("%d")[0], StringComparison.Ordinal) && k.EndsWith(Folder.PastKeyPattern.Split("%d")[1], StringComparison.Ordinal));
        if (layers != Folder.NumLayers) throw new ModelFormatException(where, $"model.decoder.num_hidden_layers is {Folder.NumLayers} but the graph has {layers} past key inputs");
        for (int layer = 0; layer < Folder.NumLayers; layer++)
        {
            foreach (var name in new[] { Folder.PastKeyName(layer), Folder.PastValueName(layer) })
            {
                if (!inputs.TryGetValue(name, out var meta)) throw new ModelFormatException(where, $"the graph has no input '{name}'");
                var dims = meta.Dimensions;
                if (dims.Length != 4 || dims[1] != Folder.NumKvHeads || dims[3] != Folder.HeadSize)
                    throw new ModelFormatException(where, $"graph input '{name}' is [{string.Join(", ", dims)}], genai_config.json says [batch, {Folder.NumKvHeads}, past, {Folder.HeadSize}]");
            }
            foreach (var name in new[] { Folder.PresentKeyName(layer), Folder.PresentValueName(layer) })
                if (!outputs.ContainsKey(name)) throw new ModelFormatException(where, $"the graph has no output '{name}'");
        }
        var logitDims = logits.Dimensions;
        if (logitDims.Length != 3 || logitDims[2] != Folder.VocabSize)
            throw new ModelFormatException(where, $"graph output 'logits' is [{string.Join(", ", logitDims)}], genai_config.json says vocab_size {Folder.VocabSize}");
        return logitDims[1] != 1;
    }

    public void Dispose()
    {
        Memory?.Dispose(); // allocators before their session
        Session?.Dispose();
    }
}
