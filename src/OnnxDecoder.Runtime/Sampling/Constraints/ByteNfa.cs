namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// A grammar compiled to a recursive transition network: one NFA per rule, whose states carry
/// byte-class edges, epsilon edges and call edges (run rule R, then continue at a return state).
/// Built once per grammar (Thompson's construction); immutable afterwards, so sequences share it.
/// </summary>
internal sealed class ByteNfa
{
    /// <summary>Caps the states a grammar may expand to (bounded repeats are unrolled).</summary>
    public const int MaxStates = 1 << 21;

    private readonly List<(ByteSet Set, int Target)>[] _bytes;
    private readonly List<int>[] _epsilon;
    private readonly List<(int Rule, int Return)>[] _calls;

    public int StateCount { get; }
    public int RuleCount { get; }
    /// <summary>Per state: the rule it ends (it may pop to the caller), or -1.</summary>
    public int[] AcceptOf { get; }
    /// <summary>Per rule: its start state.</summary>
    public int[] RuleStart { get; }

    public IReadOnlyList<(ByteSet Set, int Target)> ByteEdges(int state) => _bytes[state];
    public IReadOnlyList<int> EpsilonEdges(int state) => _epsilon[state];
    public IReadOnlyList<(int Rule, int Return)> CallEdges(int state) => _calls[state];

    public ByteNfa(Grammar grammar)
    {
        var builder = new Builder();
        RuleCount = grammar.Rules.Count;
        RuleStart = new int[RuleCount];
        var accepts = new int[RuleCount];
        for (int rule = 0; rule < RuleCount; rule++)
        {
            var body = grammar.Rules[rule] ?? throw new GrammarException($"{grammar.Description}: rule {rule} was never defined");
            RuleStart[rule] = builder.New();
            accepts[rule] = builder.Emit(body, RuleStart[rule]);
        }
        StateCount = builder.Bytes.Count;
        _bytes = [.. builder.Bytes];
        _epsilon = [.. builder.Epsilon];
        _calls = [.. builder.Calls];
        AcceptOf = new int[StateCount];
        Array.Fill(AcceptOf, -1);
        for (int rule = 0; rule < RuleCount; rule++) AcceptOf[accepts[rule]] = rule;
    }

    /// <summary>
    /// Per state, the fewest bytes that finish its rule, using only bytes in <paramref name="usable"/>
    /// (those the vocabulary has a one-byte token for, so each closing byte is one token); int.MaxValue
    /// where the rule cannot finish from there. A fixpoint of relaxations (calls cost their rule's minimum).
    /// </summary>
    public int[] DistanceToAccept(ByteSet usable)
    {
        const int Infinite = int.MaxValue;
        var dist = new int[StateCount];
        Array.Fill(dist, Infinite);
        for (int s = 0; s < StateCount; s++) if (AcceptOf[s] >= 0) dist[s] = 0;
        bool changed = true;
        while (changed)
        {
            changed = false;
            for (int s = StateCount - 1; s >= 0; s--)
            {
                long best = dist[s];
                foreach (var (set, target) in _bytes[s])
                    if (dist[target] != Infinite && !set.Intersect(usable).IsEmpty) best = Math.Min(best, 1L + dist[target]);
                foreach (var target in _epsilon[s]) best = Math.Min(best, dist[target]);
                foreach (var (rule, ret) in _calls[s])
                {
                    int inner = dist[RuleStart[rule]];
                    if (inner != Infinite && dist[ret] != Infinite) best = Math.Min(best, (long)inner + dist[ret]);
                }
                if (best < dist[s])
                {
                    dist[s] = (int)Math.Min(best, Infinite - 1);
                    changed = true;
                }
            }
        }
        return dist;
    }

    private sealed class Builder
    {
        public readonly List<List<(ByteSet, int)>> Bytes = [];
        public readonly List<List<int>> Epsilon = [];
        public readonly List<List<(int, int)>> Calls = [];

        public int New()
        {
            if (Bytes.Count >= MaxStates)
                throw new GrammarException($"the grammar expands to more than {MaxStates} states: lower maxLength, maxItems or {{m,n}} bounds");
            Bytes.Add([]);
            Epsilon.Add([]);
            Calls.Add([]);
            return Bytes.Count - 1;
        }

        private void Link(int from, int to) => Epsilon[from].Add(to);

        /// <summary>Emits <paramref name="node"/> starting at state <paramref name="from"/>; returns its end state.</summary>
        public int Emit(GrammarNode node, int from)
        {
            switch (node)
            {
                case ByteNode b:
                {
                    int to = New();
                    if (!b.Set.IsEmpty) Bytes[from].Add((b.Set, to));
                    return to;
                }
                case SeqNode seq:
                {
                    int at = from;
                    foreach (var item in seq.Items) at = Emit(item, at);
                    return at;
                }
                case AltNode alt:
                {
                    int to = New();
                    foreach (var choice in alt.Choices) Link(Emit(choice, from), to);
                    return to;
                }
                case RepeatNode repeat:
                {
                    int at = from;
                    for (int i = 0; i < repeat.Min; i++) at = Emit(repeat.Item, at);
                    if (repeat.Max < 0)
                    {
                        // A fresh loop state, so no back edge reaches a state other constructs share.
                        int loop = New();
                        Link(at, loop);
                        Link(Emit(repeat.Item, loop), loop);
                        int after = New();
                        Link(loop, after);
                        return after;
                    }
                    int end = New();
                    Link(at, end);
                    for (int i = repeat.Min; i < repeat.Max; i++)
                    {
                        at = Emit(repeat.Item, at);
                        Link(at, end);
                    }
                    return end;
                }
                case RuleNode call:
                {
                    int to = New();
                    Calls[from].Add((call.Rule, to));
                    return to;
                }
                case MembersNode members:
                    return EmitMembers(members, from);
                case AutomatonNode automaton:
                {
                    // Fresh states throughout, so the automaton's cycles reach no state other constructs share.
                    int first = Bytes.Count;
                    for (int i = 0; i < automaton.Edges.Length; i++) New();
                    int end = New();
                    Link(from, first + automaton.Start);
                    for (int i = 0; i < automaton.Edges.Length; i++)
                    {
                        foreach (var (set, target) in automaton.Edges[i])
                            if (!set.IsEmpty) Bytes[first + i].Add((set, first + target));
                        if (automaton.Accepting[i]) Link(first + i, end);
                    }
                    return end;
                }
                default:
                    throw new ArgumentException($"unknown grammar node {node.GetType().Name}", nameof(node));
            }
        }

        // One lane per count of members written so far (the first needs no separator). Without a
        // maximum the top lane means "that many or more"; with one, a member past it is not written.
        //   lane_c --member_i (separator first if c > 0)--> lane_{c+1}     lane_c --(optional)--> lane_c
        private int EmitMembers(MembersNode members, int from)
        {
            int top = members.MaxPresent >= 0 ? members.MaxPresent : Math.Max(1, members.MinPresent);
            var lanes = new int?[top + 1];
            lanes[0] = from;
            for (int i = 0; i < members.Members.Length; i++)
            {
                var next = new int?[top + 1];
                for (int count = 0; count <= top; count++)
                {
                    if (lanes[count] is not { } at) continue;
                    if (!members.Required[i]) Link(at, next[count] ??= New());
                    int after = count + 1;
                    if (after > top)
                    {
                        if (members.MaxPresent >= 0) continue;
                        after = top;
                    }
                    int start = count == 0 ? at : Emit(members.Separator, at);
                    Link(Emit(members.Members[i], start), next[after] ??= New());
                }
                lanes = next;
            }
            int end = New();
            for (int count = Math.Min(members.MinPresent, top); count <= top; count++)
                if (lanes[count] is { } at) Link(at, end);
            return end;
        }
    }
}
