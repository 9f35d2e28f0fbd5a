using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Embeddings from a model exported with <c>--hidden-states</c>: a batch of token sequences is left-padded,
/// run as one prefill over an empty past, and each row's final-normed hidden states [S, hidden] are pooled
/// (last token, mask-weighted mean, or first token, as the model's metadata says) and L2-normalised.
/// Stateless between calls: the KV outputs are left to ONNX Runtime and released with the run, so any number
/// of threads may call <see cref="Embed"/> at once (InferenceSession.Run is thread-safe).
/// </summary>
public sealed class EmbeddingRunner
{
    private readonly DecoderModel _model;
    private readonly TensorElementType _floatType;
    private readonly string[] _inputNames;
    private readonly long[] _emptyPastShape;

    /// <param name="model">A loaded model with the hidden_states output; the caller keeps owning it.</param>
    /// <param name="maxBatchSize">Sequences run together in one prefill; longer lists run in several.</param>
    public EmbeddingRunner(DecoderModel model, int maxBatchSize = 16)
    {
        _model = model;
        if (!Supports(model))
            throw new ModelFormatException(model.Folder.ModelPath, $"the graph has no output '{GraphContract.HiddenStates}': export the model again with `onnx-decoder export --hidden-states` to serve embeddings");
        MaxBatchSize = maxBatchSize > 0 ? maxBatchSize : throw new ArgumentOutOfRangeException(nameof(maxBatchSize), maxBatchSize, "the batch size must be positive");
        var meta = model.Session.OutputMetadata[GraphContract.HiddenStates];
        _floatType = meta.ElementDataType;
        if (_floatType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ModelFormatException(model.Folder.ModelPath, $"the graph's hidden_states are {_floatType}; float32 or float16 are supported");
        if (meta.Dimensions is not [_, _, var hidden] || hidden != model.Folder.HiddenSize)
            throw new ModelFormatException(model.Folder.ModelPath, $"graph output 'hidden_states' is [{string.Join(", ", meta.Dimensions)}], genai_config.json says [batch, sequence, {model.Folder.HiddenSize}]");
        var custom = model.Session.ModelMetadata.CustomMetadataMap;
        Pooling = custom.TryGetValue(GraphContract.Metadata.EmbeddingPooling, out var pooling) ? pooling : "last";
        if (!GraphContract.Metadata.Poolings.Contains(Pooling))
            throw new ModelFormatException(model.Folder.ModelPath, $"metadata {GraphContract.Metadata.EmbeddingPooling} '{Pooling}' is not known: export again with --pooling {string.Join("|", GraphContract.Metadata.Poolings)}");
        string normalize = custom.TryGetValue(GraphContract.Metadata.EmbeddingNormalize, out var n) ? n : "l2";
        Normalize = normalize switch
        {
            "l2" => true,
            "none" => false,
            _ => throw new ModelFormatException(model.Folder.ModelPath, $"metadata {GraphContract.Metadata.EmbeddingNormalize} '{normalize}' is not known: l2 or none"),
        };
        var folder = model.Folder;
        _inputNames = [GraphContract.InputIds, GraphContract.PositionIds,
            .. Enumerable.Range(0, folder.NumLayers).SelectMany(i => new[] { folder.PastKeyName(i), folder.PastValueName(i) })];
        _emptyPastShape = [0, folder.NumKvHeads, 0, folder.HeadSize];
    }

    /// <summary>Whether the model has the hidden_states output that embeddings are pooled from.</summary>
    public static bool Supports(DecoderModel model) => model.Session.OutputMetadata.ContainsKey(GraphContract.HiddenStates);

    /// <summary>Whether the model file of <paramref name="modelFolder"/> declares the hidden_states output, read from
    /// the graph's declaration without loading the model (false when the folder is not a model folder).</summary>
    public static bool FolderSupports(string modelFolder)
    {
        try
        {
            var folder = ModelFolder.Open(modelFolder);
            using var file = OnnxModelFile.Load(folder.ModelPath, new OnnxReadOptions { CheckGraph = false });
            return file.Model.Graph.Output.Any(o => o.Name == GraphContract.HiddenStates);
        }
        catch (ModelFormatException)
        {
            return false;
        }
    }

    /// <summary>"last", "mean" or "cls" (<see cref="GraphContract.Metadata.Poolings"/>).</summary>
    public string Pooling { get; }
    /// <summary>Whether embeddings are scaled to unit L2 length.</summary>
    public bool Normalize { get; }
    /// <summary>The embedding's length: the model's hidden size.</summary>
    public int Dimensions => _model.Folder.HiddenSize;
    public int MaxBatchSize { get; }
    public ModelFolder Folder => _model.Folder;

    /// <summary>One embedding [hidden] per token sequence, in order; sequences may differ in length.</summary>
    public float[][] Embed(IReadOnlyList<IReadOnlyList<int>> sequences, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        for (int i = 0; i < sequences.Count; i++)
        {
            var tokens = sequences[i] ?? throw new ArgumentException($"input {i} is null", nameof(sequences));
            if (tokens.Count == 0) throw new ArgumentException($"input {i} has no tokens: embed at least one token", nameof(sequences));
            if (tokens.Count > Folder.ContextLength)
                throw new ArgumentException($"input {i} has {tokens.Count} tokens, over the model's context length {Folder.ContextLength}: shorten it", nameof(sequences));
            foreach (int id in tokens)
                if (id < 0 || id >= Folder.VocabSize)
                    throw new ArgumentException($"input {i}: token id {id} is outside the vocabulary (0..{Folder.VocabSize - 1})", nameof(sequences));
        }
        var result = new float[sequences.Count][];
        for (int start = 0; start < sequences.Count; start += MaxBatchSize)
        {
            int count = Math.Min(MaxBatchSize, sequences.Count - start);
            var batch = RunBatch(sequences, start, count, cancellationToken);
            Array.Copy(batch, 0, result, start, count);
        }
        return result;
    }

    /// <summary>One left-padded prefill of sequences[start .. start + count).</summary>
    private float[][] RunBatch(IReadOnlyList<IReadOnlyList<int>> sequences, int start, int count, CancellationToken cancellationToken)
    {
        int length = 0;
        for (int i = 0; i < count; i++) length = Math.Max(length, sequences[start + i].Count);
        var ids = new long[count * length];        // [B, S], padding = pad token
        var mask = new long[count * length];       // [B, S], 0 = left padding
        var positions = new long[count * length];  // [B, S], real tokens count from 0, padding gets a harmless 1
        var pads = new int[count];
        for (int row = 0; row < count; row++)
        {
            var tokens = sequences[start + row];
            int pad = pads[row] = length - tokens.Count;
            for (int t = 0; t < length; t++)
            {
                int at = row * length + t;
                bool real = t >= pad;
                ids[at] = real ? tokens[t - pad] : Folder.PadTokenId;
                mask[at] = real ? 1 : 0;
                positions[at] = real ? t - pad : 1;
            }
        }

        var names = new List<string>(_inputNames);
        var inputs = new List<OrtValue>(_inputNames.Length + 3);
        try
        {
            inputs.Add(OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(ids, [count, length])));
            inputs.Add(OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(positions, [count, length])));
            var pastShape = (long[])_emptyPastShape.Clone();
            pastShape[0] = count;
            while (inputs.Count < names.Count)
                inputs.Add(OrtValueLedger.Track(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _model.KvElementType, pastShape)));
            if (_model.HasAttentionMask)
            {
                names.Add(GraphContract.AttentionMask);
                inputs.Add(OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(mask, [count, length])));
            }
            if (_model.DirectLengths)
                foreach (var (name, value) in DirectLengthInputs.ForPrefill(mask, count, length, _model.AttentionBiasType))
                {
                    names.Add(name);
                    inputs.Add(value);
                }

            using var runOptions = new RunOptions();
            using var registration = cancellationToken.Register(static state => ((RunOptions)state!).Terminate = true, runOptions);
            cancellationToken.ThrowIfCancellationRequested();
            IDisposableReadOnlyCollection<OrtValue> outputs;
            try
            {
                outputs = _model.Session.Run(runOptions, names, inputs, [GraphContract.HiddenStates]);
            }
            catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException("embedding was cancelled", cancellationToken);
            }
            OrtValueLedger.TrackCreated(outputs.Count);
            using (new LedgerRelease(outputs.Count))
            using (outputs)
            {
                var hidden = Floats(outputs[0]);           // [B, S, hidden]
                var embeddings = new float[count][];
                for (int row = 0; row < count; row++) embeddings[row] = Pool(hidden, row, length, pads[row]);
                return embeddings;
            }
        }
        finally
        {
            foreach (var value in inputs) OrtValueLedger.Release(value);
        }
    }

    private float[] Floats(OrtValue value) => _floatType == TensorElementType.Float
        ? value.GetTensorDataAsSpan<float>().ToArray()
        : Array.ConvertAll(value.GetTensorDataAsSpan<Float16>().ToArray(), h => (float)h);

    /// <summary>Pools row <paramref name="row"/> of hidden [B, S, hidden] whose first <paramref name="pad"/> columns are padding.</summary>
    private float[] Pool(float[] hidden, int row, int length, int pad)
    {
        int size = Dimensions;
        var pooled = new double[size];
        void AddColumn(int t, double weight)
        {
            int offset = (row * length + t) * size;
            for (int h = 0; h < size; h++) pooled[h] += hidden[offset + h] * weight;
        }
        switch (Pooling)
        {
            case "last": AddColumn(length - 1, 1); break;
            case "cls": AddColumn(pad, 1); break;
            default:
                for (int t = pad; t < length; t++) AddColumn(t, 1.0 / (length - pad));
                break;
        }
        double norm = 1;
        if (Normalize)
        {
            double sumSquares = 0;
            foreach (double v in pooled) sumSquares += v * v;
            // A zero vector stays zero rather than becoming NaN (as torch.nn.functional.normalize's eps does).
            norm = Math.Max(Math.Sqrt(sumSquares), 1e-12);
        }
        var embedding = new float[size];
        for (int h = 0; h < size; h++) embedding[h] = (float)(pooled[h] / norm);
        return embedding;
    }
}
