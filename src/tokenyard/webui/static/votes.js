/* Thumbs up/down on a reply: kept with the conversation in this browser, and sent to the gateway,
 * which stores it with the conversation log when logs are on (POST /v1/votes, the tenant's key). */
(function (global) {
  "use strict";

  const VOTES_PATH = "/v1/votes";

  /** Send `node`'s vote (or its withdrawal); resolves to null, or a sentence saying why it was not stored. */
  async function record(node, apiKey) {
    const stats = node.stats || {};
    if (!stats.responseId && !stats.requestId) return "Vote kept in this browser only: the reply has no server id.";
    const body = { response_id: stats.responseId || null, request_id: stats.requestId || null, vote: node.vote || null };
    try {
      await global.TYApi.postJson(VOTES_PATH, apiKey, body);
      return null;
    } catch (err) {
      return "Vote kept in this browser only: " + err.message;
    }
  }

  global.TYVotes = { record };
})(window);
