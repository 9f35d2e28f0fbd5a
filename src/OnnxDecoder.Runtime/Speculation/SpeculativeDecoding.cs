using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Runtime.Speculation;

/// <summary>
/// The decode loop of <see cref="Generator"/> under speculation. Each round drafts k tokens after the
/// pending token x, runs the target once on [x, d1..dk] (k + 1 positions), and verifies the drafts in
/// order with standard speculative rejection sampling: draft d is kept with probability min(1, p(d) / q(d)),
/// where p is the distribution the target's sampling chain yields at that position and q the draft's
/// (a point mass for prompt lookup); the first rejected one is replaced by a draw from
/// norm(max(0, p - q)); when all are kept, a bonus token is drawn from the last position. Greedy keeps
/// a draft exactly when it is the target's arg-max, so the output equals plain greedy decoding. The
/// rejected positions are cut from the KV cache (its length shrinks).
/// </summary>
internal static class SpeculativeDecoding
{
    /// <summary>Refuses a session whose cache cannot drop its last positions, or whose graph scores only the last one.</summary>
    public static void CheckCanRollBack(DecoderSession session, string role)
    {
        if (!session.CanTruncate)
            throw new NotSupportedException($"{session.Folder.Directory}: the {role}'s KV cache cannot roll back rejected drafts: speculative decoding shrinks the KV length, which needs a batch of one over a shared KV buffer (the ort lowering's GroupQueryAttention), and this graph has separate past/present buffers: re-export with --lowering ort");
        if (!session.Model.FullLogits)
            throw new NotSupportedException($"{session.Folder.Directory}: the {role}'s graph returns logits for the last position only, so one run cannot verify k drafted tokens: re-export with logits for every position");
    }

    /// <summary>
    /// Decodes until <paramref name="state"/> stops. On entry the state's last generated token is pending
    /// (sampled, not yet run) and <paramref name="sequence"/> holds what the cache holds; on return the same holds.
    /// </summary>
    public static SpeculationStats Run(DecoderSession session, GenerationState state, List<int> sequence, SpeculationOptions options,
        int maxNewTokens, Action<GeneratedToken>? onToken, CancellationToken cancellationToken)
    {
        var drafter = options.Drafter;
        if (options.DraftTokens < 1) throw new ArgumentOutOfRangeException(nameof(options), options.DraftTokens, "draft tokens (k) must be at least 1");
        int vocab = session.VocabSize, kMax = options.DraftTokens;
        var drafts = new int[kMax];
        var q = new float[drafter.HasDistributions ? kMax * vocab : 0];
        var scored = new float[(kMax + 1) * vocab];   // [k + 1, vocab] the target's logits at each verified position
        var p = new float[vocab];
        var step = new long[1];
        int rounds = 0, drafted = 0, acceptedTotal = 0, misses = 0, pause = 0;
        while (state.StopReason is null)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int x = state.Generated[^1];
            int n = sequence.Count;
            int k = Math.Min(kMax, Math.Min(session.MaxLength - n - 1, maxNewTokens - state.Generated.Count - 1));
            k = Math.Min(k, session.Model.PositionsBeforeLongRopeSwitch(n) - 1); // [x, d1..dk] on one side of LongRoPE's switch
            sequence.Add(x); // in the cache after this round's run, whatever is accepted
            int m = 0;
            if (k > 0 && pause == 0) m = drafter.Draft(sequence, drafts.AsSpan(0, k), q, cancellationToken);
            else if (pause > 0) pause--;
            if (m == 0)
            {
                step[0] = x;
                var logits = session.Step(step, cancellationToken);
                Emit(state.Next(logits, session.Length, session.MaxLength), onToken);
                continue;
            }
            var ids = new long[m + 1];
            ids[0] = x;
            for (int i = 0; i < m; i++) ids[i + 1] = drafts[i];
            session.AppendScoringEach(ids, scored, cancellationToken);
            rounds++;
            drafted += m;
            var (accepted, kept) = Verify(state, scored.AsSpan(0, (m + 1) * vocab), drafts.AsSpan(0, m),
                drafter.HasDistributions ? q.AsSpan(0, m * vocab) : default, p, n, session.MaxLength, onToken);
            for (int i = 0; i < kept; i++) sequence.Add(drafts[i]);
            acceptedTotal += accepted;
            if (accepted > 0) misses = 0;
            else if (++misses >= options.MissesBeforePause) pause = Math.Min(32, 1 << Math.Min(5, misses - options.MissesBeforePause));
            if (session.Length > sequence.Count) session.TruncateTo(sequence.Count);
            drafter.Keep(sequence.Count);
        }
        return new SpeculationStats(drafter.Name, rounds, drafted, acceptedTotal);
    }

    /// <summary>
    /// Verifies one round: <paramref name="drafts"/> (m tokens drafted after the pending token x) against the
    /// target's logits <paramref name="scored"/> [m + 1, vocab] of the run over [x, d1..dm], in order; hands each
    /// chosen token to <paramref name="state"/> (and its piece to <paramref name="onToken"/>), and draws the bonus
    /// token when every draft is kept. <paramref name="q"/> [m, vocab] holds the drafts' distributions, or is empty
    /// for point masses. <paramref name="cached"/> counts the positions in the cache before x. Returns the drafts
    /// accepted, and how many of them (the first ones) are fed tokens of a sequence that goes on, so in the cache.
    /// Shared by <see cref="Generator"/>'s loop and the <see cref="ContinuousBatcher"/>'s rows.
    /// </summary>
    internal static (int Accepted, int Kept) Verify(GenerationState state, ReadOnlySpan<float> scored, ReadOnlySpan<int> drafts, ReadOnlySpan<float> q,
        float[] p, int cached, int maxLength, Action<GeneratedToken>? onToken)
    {
        int vocab = p.Length, m = drafts.Length, accepted = 0, kept = 0;
        var sampler = state.Sampler;
        bool rejected = false;
        for (int i = 0; i < m && state.StopReason is null; i++)
        {
            var row = scored.Slice(i * vocab, vocab);
            int d = drafts[i], chosen;
            if (sampler.IsGreedy)
            {
                chosen = sampler.Next(row, state.History);
                rejected = chosen != d;
            }
            else
            {
                sampler.Distribution(row, state.History, p);
                float qd = q.IsEmpty ? 1 : q[i * vocab + d];
                double ratio = qd > 0 ? p[d] / qd : 0;
                rejected = ratio < 1 && (ratio <= 0 || sampler.NextUniform() >= ratio);
                chosen = d;
                if (rejected) chosen = sampler.Choose(Residual(p, q.IsEmpty ? default : q.Slice(i * vocab, vocab), d));
            }
            if (!rejected) accepted++;
            Emit(state.Accept(chosen, cached + 1 + i, maxLength), onToken);
            if (rejected) break;
            if (state.StopReason is null) kept++;
        }
        if (!rejected && state.StopReason is null)
            Emit(state.Next(scored.Slice(m * vocab, vocab), cached + 1 + m, maxLength), onToken); // every draft kept: a bonus token
        return (accepted, kept);
    }

    /// <summary>max(0, p - q) in place over <paramref name="p"/> (q: a point mass on <paramref name="draft"/> when empty);
    /// p itself when nothing is left (p = q up to rounding).</summary>
    private static Span<float> Residual(Span<float> p, ReadOnlySpan<float> q, int draft)
    {
        float saved = p[draft];
        bool any = false;
        if (q.IsEmpty)
        {
            p[draft] = 0;
            foreach (var v in p) any |= v > 0;
            if (!any) p[draft] = saved;
            return p;
        }
        var copy = p.ToArray();
        for (int i = 0; i < p.Length; i++)
        {
            p[i] = Math.Max(0, p[i] - q[i]);
            any |= p[i] > 0;
        }
        if (!any) copy.CopyTo(p);
        return p;
    }

    private static void Emit(GeneratedToken? piece, Action<GeneratedToken>? onToken)
    {
        if (piece is not null) onToken?.Invoke(piece);
    }
}
