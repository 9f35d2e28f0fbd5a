namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// The sentences of a regular grammar that do not contain a marker anywhere: the product of the grammar's automaton with
/// the marker's Knuth-Morris-Pratt automaton (state j: the last j bytes read are the marker's first j; reaching its whole
/// length is refused). A raw-text value closed by a marker (Qwen3-Coder's "&lt;/parameter&gt;") needs this whenever the
/// value has constraints of its own (a pattern, a length), since a match may run into the marker or across its edges.
/// Built over bytes, so any marker and any byte grammar work; the result is an <see cref="AutomatonNode"/> trimmed to the
/// states that are reachable and can still finish.
/// </summary>
public static class TextExcluding
{
    /// <summary>Product states allowed (each becomes a state of the grammar's NFA, which caps them at <see cref="ByteNfa.MaxStates"/>).</summary>
    public const int MaxStates = ByteNfa.MaxStates / 4;

    /// <summary>The sentences of <paramref name="regular"/> (bytes, sequences, choices, repeats and automata: no rules, no
    /// members) without <paramref name="marker"/>; throws when none is left or the product outgrows <see cref="MaxStates"/>.</summary>
    public static GrammarNode Intersect(GrammarNode regular, string marker)
    {
        byte[] markerBytes = System.Text.Encoding.UTF8.GetBytes(marker);
        if (markerBytes.Length == 0) throw new ArgumentException("the marker must not be empty", nameof(marker));
        var nfa = new ByteNfa(new Grammar { Description = "text" }.WithRoot(regular));
        for (int s = 0; s < nfa.StateCount; s++)
            if (nfa.CallEdges(s).Count > 0) throw new ArgumentException("the grammar must be regular (no rule calls)", nameof(regular));
        var toward = MarkerSteps(markerBytes);
        var moves = new Dictionary<int, ((ByteSet Set, int Target)[] Edges, bool Accepting)>();

        // Forward: the product states reachable from (start, 0), numbered as found.
        var index = new Dictionary<(int State, int Matched), int>();
        var found = new List<(int State, int Matched)>();
        var edges = new List<Dictionary<int, ByteSet>>();
        var accepting = new List<bool>();
        int Id(int state, int matched)
        {
            if (index.TryGetValue((state, matched), out int id)) return id;
            if (found.Count >= MaxStates)
                throw new GrammarException($"text without '{marker}' expands to more than {MaxStates} states: lower maxLength or the pattern's bounds");
            index[(state, matched)] = found.Count;
            found.Add((state, matched));
            edges.Add([]);
            accepting.Add(false);
            return found.Count - 1;
        }
        Id(nfa.RuleStart[0], 0);
        for (int at = 0; at < found.Count; at++)
        {
            var (state, matched) = found[at];
            var (stateEdges, accepts) = Moves(nfa, state, moves);
            accepting[at] = accepts;
            foreach (var (set, target) in stateEdges)
                for (int next = 0; next < markerBytes.Length; next++)
                {
                    var part = set.Intersect(toward[matched][next]);
                    if (part.IsEmpty) continue;
                    int to = Id(target, next);
                    edges[at][to] = edges[at].TryGetValue(to, out var existing) ? existing.Union(part) : part;
                }
        }

        // Backward: keep the states from which an accepting one is reachable.
        var incoming = new List<int>[found.Count];
        for (int s = 0; s < found.Count; s++) incoming[s] = [];
        for (int s = 0; s < found.Count; s++)
            foreach (int to in edges[s].Keys) incoming[to].Add(s);
        var live = new bool[found.Count];
        var work = new Stack<int>();
        for (int s = 0; s < found.Count; s++)
            if (accepting[s]) { live[s] = true; work.Push(s); }
        while (work.Count > 0)
            foreach (int from in incoming[work.Pop()])
                if (!live[from]) { live[from] = true; work.Push(from); }
        if (!live[0]) throw new GrammarException($"every text it allows contains '{marker}'");

        var renumbered = new int[found.Count];
        int count = 0;
        for (int s = 0; s < found.Count; s++) renumbered[s] = live[s] ? count++ : -1;
        var automatonEdges = new (ByteSet, int)[count][];
        var automatonAccepting = new bool[count];
        for (int s = 0; s < found.Count; s++)
        {
            if (!live[s]) continue;
            automatonEdges[renumbered[s]] = [.. edges[s].Where(e => live[e.Key]).Select(e => (e.Value, renumbered[e.Key]))];
            automatonAccepting[renumbered[s]] = accepting[s];
        }
        return new AutomatonNode(0, automatonEdges, automatonAccepting);
    }

    // Per matched count j and next count k (below the marker's length): the bytes that take j to k. The missing k (the
    // whole marker) is the refused step.
    private static ByteSet[][] MarkerSteps(byte[] marker)
    {
        int length = marker.Length;
        var next = new int[length][];
        for (int j = 0; j < length; j++) next[j] = new int[256];
        next[0][marker[0]] = 1;
        // fallback: the matched count after the marker's bytes 1..j (where a mismatch at j+1 restarts).
        int fallback = 0;
        for (int j = 1; j < length; j++)
        {
            Array.Copy(next[fallback], next[j], 256);
            next[j][marker[j]] = j + 1;
            fallback = next[fallback][marker[j]];
        }
        var steps = new ByteSet[length][];
        for (int j = 0; j < length; j++)
        {
            steps[j] = new ByteSet[length];
            for (int b = 0; b < 256; b++)
                if (next[j][b] < length) steps[j][next[j][b]] = steps[j][next[j][b]].Union(ByteSet.Of((byte)b));
        }
        return steps;
    }

    // A state's byte steps after its epsilon closure (edges to one target merged), and whether the closure accepts.
    private static ((ByteSet Set, int Target)[] Edges, bool Accepting) Moves(ByteNfa nfa, int state,
        Dictionary<int, ((ByteSet, int)[], bool)> memo)
    {
        if (memo.TryGetValue(state, out var known)) return known;
        var seen = new HashSet<int> { state };
        var work = new Stack<int>();
        work.Push(state);
        var byTarget = new Dictionary<int, ByteSet>();
        bool accepts = false;
        while (work.Count > 0)
        {
            int s = work.Pop();
            accepts |= nfa.AcceptOf[s] == 0;
            foreach (var (set, target) in nfa.ByteEdges(s))
                byTarget[target] = byTarget.TryGetValue(target, out var existing) ? existing.Union(set) : set;
            foreach (int target in nfa.EpsilonEdges(s))
                if (seen.Add(target)) work.Push(target);
        }
        ((ByteSet, int)[], bool) result = ([.. byTarget.Select(e => (e.Value, e.Key))], accepts);
        memo[state] = result;
        return result;
    }
}
