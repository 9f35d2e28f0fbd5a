using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Runtime.Speculation;

/// <summary>
/// Speculative decoding inside a <see cref="ContinuousBatcher"/>: the drafter of each row, the scratch of a
/// verification step and the acceptance counts. Prompt lookup keeps no state, so one drafter serves every
/// row; a draft model keeps a KV cache per sequence, so each row gets its own batch-of-one session of the
/// one loaded draft model (opened when a row first drafts, reset for each new sequence in it).
/// Used by the scheduler thread only, except the counters.
/// </summary>
internal sealed class BatchSpeculation : IDisposable
{
    private readonly ModelFolder _target;
    private readonly PromptLookupDrafter? _lookup;
    private readonly DecoderModel? _draftModel;
    private readonly DraftModelDrafter?[] _rowDrafters;
    private readonly BatchedSequence?[] _rowOwners;   // the sequence each row's draft session follows
    private readonly int _maxLength;
    private long _rounds, _drafted, _accepted;

    public BatchSpeculation(DecoderModel target, BatcherOptions options, int rows, int maxLength)
    {
        _target = target.Folder;
        _maxLength = maxLength;
        DraftTokens = options.DraftTokens;
        AlwaysVerify = options.AlwaysVerifyDrafts;
        _rowDrafters = new DraftModelDrafter?[rows];
        _sharedTicks = new double[rows + 1];
        _aloneTicks = new double[DraftTokens + 2];
        _rowOwners = new BatchedSequence?[rows];
        if (options.Speculative == "ngram")
        {
            _lookup = new PromptLookupDrafter();
            Name = "ngram";
        }
        else
        {
            _draftModel = new DecoderModel(options.Speculative!, options.DraftProviders);
            try
            {
                DraftModelDrafter.CheckSameVocabulary(_target, _draftModel.Folder);
                _rowDrafters[0] = OpenDrafter(); // refuses, now rather than at the first draft, a draft cache that cannot roll back
            }
            catch
            {
                _draftModel.Dispose();
                throw;
            }
            Name = _draftModel.Folder.Directory;
        }
        Scored = new float[checked((DraftTokens + 1) * target.Folder.VocabSize)];
        Target = new float[target.Folder.VocabSize];
        try { Verifier = new BoundRunStep(target, rows: 1, maxTokens: DraftTokens + 1, maxLength); }
        catch { Dispose(); throw; }
    }

    /// <summary>A batch-of-one run over one row of the batch cache, k + 1 positions: ONNX Runtime's
    /// GroupQueryAttention takes several new positions over a past only for a batch of one, so each
    /// row verifies its drafts in a run of its own.</summary>
    public BoundRunStep Verifier { get; }

    /// <summary>"ngram" or the draft model's folder.</summary>
    public string Name { get; }
    public int DraftTokens { get; }
    /// <summary>Verify drafts whatever the acceptance estimate says (<see cref="BatcherOptions.AlwaysVerifyDrafts"/>).</summary>
    public bool AlwaysVerify { get; }
    public bool HasDistributions => _draftModel is not null;
    /// <summary>[k + 1, vocab] the target's logits at every verified position of the last verification run.</summary>
    public float[] Scored { get; }
    /// <summary>[vocab] scratch for the target's distribution at one position.</summary>
    public float[] Target { get; }
    public long Rounds => Interlocked.Read(ref _rounds);
    public long Drafted => Interlocked.Read(ref _drafted);
    public long Accepted => Interlocked.Read(ref _accepted);

    /// <summary>Refuses, at construction, a batcher whose graph cannot verify drafts in its batched run.</summary>
    public static void CheckOptions(BatcherOptions options, DecoderModel model)
    {
        string folder = model.Folder.Directory;
        if (options.DraftTokens is < 1 or > 64)
            throw new ArgumentOutOfRangeException(nameof(options), options.DraftTokens, "DraftTokens (k) must be between 1 and 64");
        if (!model.RowsKeepOwnLengths)
            throw new NotSupportedException($"{folder}: speculative decoding in the batcher needs rows that keep their own lengths, so that each row's rejected drafts roll back alone; this graph's rows share one timeline (the portable lowering): re-export with --lowering ort");
        if (!model.FullLogits)
            throw new NotSupportedException($"{folder}: the graph returns logits for the last position only, so one run cannot verify k drafted tokens: re-export with logits for every position");
        if (options.Speculative != "ngram" && !File.Exists(Path.Combine(options.Speculative!, "genai_config.json")))
            throw new ArgumentException($"Speculative '{options.Speculative}' is neither 'ngram' nor a model folder (no genai_config.json): give ngram, or the folder of a smaller export with the same tokenizer");
    }

    /// <summary>The per-request state when <paramref name="options"/> may speculate (no constraint); else null.</summary>
    public RowSpeculation? For(GenerationOptions options, IReadOnlyList<int> promptIds) =>
        options.Constraint is not null ? null : new RowSpeculation(Name, promptIds, options.MaxNewTokens, options.Sampling, DraftTokens, HasDistributions ? _target.VocabSize : 0);

    /// <summary>Drafts for the sequence in <paramref name="row"/>, at most <paramref name="k"/>.</summary>
    public int Draft(int row, BatchedSequence sequence, RowSpeculation speculation, int k, CancellationToken cancellationToken)
    {
        speculation.Sync(sequence.State.Generated);
        if (_lookup is not null) return _lookup.Draft(speculation.Context, speculation.Drafts.AsSpan(0, k), speculation.Distributions, cancellationToken);
        var drafter = _rowDrafters[row] ??= OpenDrafter();
        if (!ReferenceEquals(_rowOwners[row], sequence))
        {
            drafter.Begin(_target, speculation.Sampling);
            _rowOwners[row] = sequence;
        }
        return drafter.Draft(speculation.Context, speculation.Drafts.AsSpan(0, k), speculation.Distributions, cancellationToken);
    }

    /// <summary>Whether drafting costs no model run (prompt lookup): then rows that decode in the shared step
    /// may draft just to learn how often their drafts would be accepted.</summary>
    public bool DraftsAreFree => _lookup is not null;

    private DraftModelDrafter OpenDrafter()
    {
        var session = new DecoderSession(_draftModel!, new DecoderSessionOptions { MaxLength = Math.Min(_maxLength, _draftModel!.Folder.ContextLength) });
        try { return new DraftModelDrafter(session, ownsSession: true); }
        catch { session.Dispose(); throw; }
    }

    /// <summary>After verification: the row's cache holds the first <paramref name="length"/> tokens of its context.</summary>
    public void Keep(int row, int length) => _rowDrafters[row]?.Keep(length);

    // Run times, moving averages in Stopwatch ticks (0: not measured yet): the shared step by the rows it decodes,
    // a row's run alone by the positions it runs (1 + drafts).
    private readonly double[] _sharedTicks, _aloneTicks;
    private int _sharedRows;
    private long _sharedStarted;

    /// <summary>The shared step over <paramref name="rows"/> decoding rows starts now (timed until <see cref="AfterSharedStep"/>).</summary>
    public void BeginSharedStep(int rows) => (_sharedRows, _sharedStarted) = (rows, System.Diagnostics.Stopwatch.GetTimestamp());

    public void AfterSharedStep()
    {
        if (_sharedRows == 0) return;
        Average(_sharedTicks, _sharedRows, System.Diagnostics.Stopwatch.GetTimestamp() - _sharedStarted);
        _sharedRows = 0;
    }

    /// <summary>A row ran alone over <paramref name="positions"/> positions in <paramref name="ticks"/>.</summary>
    public void RanAlone(int positions, long ticks) => Average(_aloneTicks, positions, ticks);

    private static void Average(double[] ticks, int index, long measured) =>
        ticks[index] = ticks[index] == 0 ? measured : 0.9 * ticks[index] + 0.1 * measured;

    /// <summary>
    /// Whether running every decoding row alone (row r over 1 + drafts[r] positions, expected to yield 1 + its
    /// accepted drafts per round) makes more tokens per second than one shared step of all of them. Until both
    /// run times are measured: when one row decodes, or the expected tokens per run exceed the rows; once measured,
    /// with several rows, only by a margin of 15%.
    /// </summary>
    public bool AlonePays(ReadOnlySpan<int> drafts, ReadOnlySpan<double> expectedTokens)
    {
        int rows = drafts.Length;
        double tokens = 0, ticks = 0;
        bool measured = _sharedTicks[rows] > 0;
        for (int r = 0; r < rows; r++)
        {
            tokens += expectedTokens[r];
            ticks += _aloneTicks[1 + drafts[r]];
            measured &= _aloneTicks[1 + drafts[r]] > 0;
        }
        if (!measured) return rows == 1 || tokens > rows * (double)rows;
        // Beside other rows, running alone must win clearly: the averages are of noisy run times.
        double margin = rows == 1 ? 1 : 1.15;
        return tokens / ticks > margin * rows / _sharedTicks[rows];
    }

    public void Count(int drafted, int accepted)
    {
        Interlocked.Increment(ref _rounds);
        Interlocked.Add(ref _drafted, drafted);
        Interlocked.Add(ref _accepted, accepted);
    }

    public void Dispose()
    {
        Verifier?.Dispose();
        foreach (var drafter in _rowDrafters) drafter?.Dispose();
        _draftModel?.Dispose();
    }
}

/// <summary>One request's speculation in the batcher: its context for the drafter, this step's drafts, and
/// its acceptance counts with the adaptive pause (as in <see cref="SpeculativeDecoding"/>).</summary>
internal sealed class RowSpeculation
{
    private const int MissesBeforePause = 2;
    private readonly int _promptLength;
    private int _misses;

    public RowSpeculation(string drafter, IReadOnlyList<int> promptIds, int maxNewTokens, SamplingOptions sampling, int draftTokens, int vocabForDistributions)
    {
        Drafter = drafter;
        Context = [.. promptIds];
        _promptLength = promptIds.Count;
        MaxNewTokens = maxNewTokens;
        Sampling = sampling;
        Drafts = new int[draftTokens];
        Estimate = draftTokens; // optimistic until a round is counted, so that a request tries speculating
        Distributions = new float[draftTokens * vocabForDistributions];
    }

    public string Drafter { get; }
    /// <summary>The prompt and every generated token, the last one pending (the drafter's context).</summary>
    public List<int> Context { get; }
    public int MaxNewTokens { get; }
    public SamplingOptions Sampling { get; }
    /// <summary>[k] this step's drafts; [k, vocab] their distributions (empty for prompt lookup).</summary>
    public int[] Drafts { get; }
    public float[] Distributions { get; }
    /// <summary>Drafts this step verifies (0: the row decodes one token).</summary>
    public int Count { get; set; }
    /// <summary>Plain steps left before drafting again.</summary>
    public int Pause { get; set; }
    public int Rounds { get; private set; }
    public int Drafted { get; private set; }
    public int Accepted { get; private set; }

    /// <summary>Drafts accepted per round, a moving average over this request's rounds, verified or shadow;
    /// it decides whether verifying each row in a run of its own beats one shared step.</summary>
    public double Estimate { get; private set; }
    /// <summary>Drafts made while the row decoded in the shared step, checked against the tokens it then
    /// generated (a shadow round: nothing verified, only <see cref="Estimate"/> learns).</summary>
    public int ShadowCount { get; private set; }
    private readonly int[] _shadow = new int[64];
    private int _shadowBase;

    /// <summary>Keeps this step's drafts as a shadow round (the row decodes one token in the shared step).</summary>
    public void BeginShadow(int generated)
    {
        ShadowCount = Math.Min(Count, _shadow.Length);
        Drafts.AsSpan(0, ShadowCount).CopyTo(_shadow);
        _shadowBase = generated;
        Count = 0;
    }

    /// <summary>Compares a shadow round's drafts with what the row generated since; ends the round at the first
    /// miss or once every draft is compared, counting it in <see cref="Estimate"/>.</summary>
    public void CheckShadow(List<int> generated)
    {
        if (ShadowCount == 0) return;
        int available = generated.Count - _shadowBase, matched = 0;
        while (matched < ShadowCount && matched < available && generated[_shadowBase + matched] == _shadow[matched]) matched++;
        if (matched < ShadowCount && matched == available) return; // not decided yet
        Learn(matched);
        ShadowCount = 0;
    }

    private void Learn(int accepted) => Estimate = _learned++ == 0 ? accepted : 0.5 * Estimate + 0.5 * accepted;
    private int _learned;

    /// <summary>Appends the tokens generated since the last draft.</summary>
    public void Sync(List<int> generated)
    {
        for (int i = Context.Count - _promptLength; i < generated.Count; i++) Context.Add(generated[i]);
    }

    /// <summary>A verified round: after misses in a row drafting pauses (1, 2, 4 ... 32 plain steps).</summary>
    public void Record(int drafted, int accepted)
    {
        Rounds++;
        Drafted += drafted;
        Accepted += accepted;
        Learn(accepted);
        if (accepted > 0) _misses = 0;
        else if (++_misses >= MissesBeforePause) Pause = Math.Min(32, 1 << Math.Min(5, _misses - MissesBeforePause));
    }

    public SpeculationStats Stats => new(Drafter, Rounds, Drafted, Accepted);
}
