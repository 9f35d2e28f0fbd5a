using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Model;

namespace OnnxDecoder.Router;

/// <summary>
/// Our load-balancing policy: a request with a conversation key goes to the available replica with
/// the highest rendezvous score for that key (the same one every turn while it stays healthy); a
/// request without one, or every request under <see cref="Affinity.None"/>, goes round-robin.
/// YARP hands it only the destinations that are healthy and not skipped by a retry.
/// </summary>
public sealed class ReplicaPolicy(Affinity affinity) : ILoadBalancingPolicy
{
    public const string PolicyName = "OnnxDecoderReplicas";
    private int _next = -1;

    public string Name => PolicyName;

    public DestinationState? PickDestination(HttpContext context, ClusterState cluster, IReadOnlyList<DestinationState> availableDestinations)
    {
        if (availableDestinations.Count == 0) return null;
        if (affinity == Affinity.Conversation && ConversationKey.Of(context) is { } key)
        {
            DestinationState best = availableDestinations[0];
            ulong bestScore = ConversationKey.Score(key, best.DestinationId);
            for (int i = 1; i < availableDestinations.Count; i++)
            {
                ulong score = ConversationKey.Score(key, availableDestinations[i].DestinationId);
                if (score > bestScore) (best, bestScore) = (availableDestinations[i], score);
            }
            return best;
        }
        uint turn = unchecked((uint)Interlocked.Increment(ref _next));
        return availableDestinations[(int)(turn % (uint)availableDestinations.Count)];
    }
}
