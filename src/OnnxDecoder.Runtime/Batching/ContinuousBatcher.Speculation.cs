using OnnxDecoder.Runtime.Speculation;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Speculative decoding in the batch (<see cref="BatcherOptions.Speculative"/>). ONNX Runtime's
/// GroupQueryAttention runs several new positions over a past only for a batch of one, so a row verifies its
/// drafts [x, d1..dm] in a run of its own over its row of the batch cache (the run binds that row alone; the
/// other rows, a prompt being prefilled and cached rows are untouched). Its rejected drafts wrote columns past
/// the row's length, which the next run overwrites: that is the per-row rollback. Verification is the
/// <see cref="Generator"/>'s (greedy keeps a draft exactly when it is the arg-max; sampling uses standard
/// rejection sampling over the row's own chain).
/// <para>
/// One shared step decodes a token for every row for about the cost of one run, so running rows alone pays
/// only while their drafts are accepted often enough. Each step compares the two: the rows' expected tokens
/// (1 + accepted drafts per round, a moving average per request) over the measured time of their runs alone
/// (by positions run), against the rows over the measured time of a shared step of that many rows. Until both
/// are measured, rows run alone when one sequence decodes (as <see cref="Generator"/> does) or when the expected
/// tokens per run exceed the rows. Otherwise the shared step runs; with prompt lookup (no model run) the rows
/// still draft in its shadow and check the drafts against the tokens they then generate, so the estimates
/// follow the text.
/// </para>
/// </summary>
public sealed partial class ContinuousBatcher
{
    private readonly BatchSpeculation? _speculation;

    /// <summary>"ngram" or the draft model folder when the batcher decodes speculatively; else null.</summary>
    public string? Speculative => _speculation?.Name;
    /// <summary>Verification rounds run (a row's run over its drafts is one round).</summary>
    public long SpeculativeRounds => _speculation?.Rounds ?? 0;
    /// <summary>Tokens drafted and verified so far.</summary>
    public long DraftedTokens => _speculation?.Drafted ?? 0;
    /// <summary>Drafted tokens the target accepted; over <see cref="DraftedTokens"/>, the acceptance rate.</summary>
    public long AcceptedDraftTokens => _speculation?.Accepted ?? 0;

    /// <summary>Drafts for the speculating rows and, when running them alone is expected to pay, runs every
    /// decoding row alone (with its drafts, if any) and verifies them. False: the shared step runs instead.</summary>
    private bool StepVerifyingDrafts()
    {
        var speculation = _speculation!;
        var live = _layout.Live;
        int rows = _layout.ActiveRows(), decoding = 0;
        for (int row = 0; row < rows; row++)
        {
            if (live[row] is not { } sequence) continue;
            decoding++;
            if (sequence.Speculation is not { } own) continue;
            own.Count = 0;
            own.CheckShadow(sequence.State.Generated);
        }
        Span<int> drafts = decoding <= 128 ? stackalloc int[decoding] : new int[decoding];
        Span<double> expected = decoding <= 128 ? stackalloc double[decoding] : new double[decoding];
        if (!speculation.DraftsAreFree && !speculation.AlwaysVerify)
        {
            // A draft model costs runs: draft only when k drafts per row would be expected to pay.
            int i = 0;
            for (int row = 0; row < rows; row++)
                if (live[row] is { } sequence)
                {
                    bool can = sequence.Speculation is { Pause: 0 } own && Room(sequence, own) > 0;
                    drafts[i] = can ? Room(sequence, sequence.Speculation!) : 0;
                    expected[i++] = 1 + (can ? sequence.Speculation!.Estimate : 0);
                }
            if (!speculation.AlonePays(drafts, expected)) return Shared(speculation, decoding);
        }

        int drafting = 0, index = 0;
        for (int row = 0; row < rows; row++)
        {
            if (live[row] is not { } sequence) continue;
            int at = index++;
            (drafts[at], expected[at]) = (0, 1);
            if (sequence.Speculation is not { } own) continue;
            if (own.Pause > 0)
            {
                own.Pause--;
                continue;
            }
            int k = Room(sequence, own);
            if (k <= 0) continue;
            own.Count = speculation.Draft(row, sequence, own, k, _shutdown.Token);
            if (own.Count == 0) continue;
            drafting++;
            (drafts[at], expected[at]) = (own.Count, 1 + own.Estimate);
        }
        if (drafting == 0 || !(speculation.AlwaysVerify || speculation.AlonePays(drafts, expected)))
        {
            // Prompt lookup's drafts still teach each row's estimate, checked against the tokens it now generates.
            for (int row = 0; row < rows; row++)
                if (live[row] is { Speculation: { Count: > 0, ShadowCount: 0 } own } sequence) own.BeginShadow(sequence.State.Generated.Count);
            return Shared(speculation, decoding);
        }
        for (int row = 0; row < rows; row++)
            if (live[row] is { } sequence) VerifyAlone(row, sequence);
        return true;
    }

    /// <summary>Drafts the row may verify now: k, less what the max length, max tokens and LongRoPE's switch leave
    /// (verification stays on one side of the switch; the crossing happens on a plain step).</summary>
    private int Room(BatchedSequence sequence, RowSpeculation own) =>
        Math.Min(Math.Min(_speculation!.DraftTokens, _model.PositionsBeforeLongRopeSwitch(sequence.Positions) - 1),
            Math.Min(MaxLength - sequence.Positions - 1, own.MaxNewTokens - sequence.State.Generated.Count - 1));

    private static bool Shared(BatchSpeculation speculation, int decoding)
    {
        speculation.BeginSharedStep(decoding);
        return false;
    }

    /// <summary>Runs <paramref name="row"/> alone over [x, d1..dm] (m may be 0) and verifies its drafts.</summary>
    private void VerifyAlone(int row, BatchedSequence sequence)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp(); // timed like the shared step: the run and the sampling after it
        var speculation = _speculation!;
        var run = speculation.Verifier;
        var own = sequence.Speculation;
        int drafted = own?.Count ?? 0, tokens = drafted + 1, cached = sequence.Positions, total = cached + tokens;
        var ids = run.Ids(1, tokens);
        var positions = run.Positions(1, tokens);
        ids[0] = sequence.State.Generated[^1];
        for (int i = 0; i < drafted; i++) ids[1 + i] = own!.Drafts[i];
        for (int t = 0; t < tokens; t++) positions[t] = cached + t;
        run.Mask(1, total).Fill(1);
        var scored = speculation.Scored; // [tokens, vocab]
        run.Run(1, tokens, total, _layout.Cache, cacheRow: row, pastLength: cached, _shutdown.Token, scored, leftPadded: false);
        Interlocked.Increment(ref _steps);
        int fed = 1;
        if (drafted == 0)
        {
            sequence.DecodedSteps++;
            var piece = sequence.State.Next(scored.AsSpan(0, _vocab), sequence.Positions, MaxLength);
            if (piece is not null) sequence.Emit(piece);
        }
        else
        {
            var (accepted, kept) = SpeculativeDecoding.Verify(sequence.State, scored.AsSpan(0, tokens * _vocab), own!.Drafts.AsSpan(0, drafted),
                speculation.HasDistributions ? own.Distributions.AsSpan(0, drafted * _vocab) : default, speculation.Target, cached, MaxLength, sequence.Emit);
            fed += kept;
            sequence.DecodedSteps += fed;
            own.Record(drafted, accepted);
            speculation.Count(drafted, accepted);
            speculation.Keep(row, cached + fed);
        }
        Interlocked.Add(ref _rowSteps, fed);
        speculation.RanAlone(tokens, System.Diagnostics.Stopwatch.GetTimestamp() - started);
        if (sequence.State.StopReason is null) return;
        _layout.Release(row, sequence);
        Complete(sequence, null);
    }
}
