/* Thumbs up/down on a reply: kept with the conversation in this browser, and sent to the gateway,
 * which stores it with the conversation log when logs are on (POST /v1/votes with the tenant's key;
 * the reply is named by the X-Request-ID its response carried). */
(function (global) {
  "use strict";

  const VOTES_PATH = "/v1/votes";

  /** Send `node`'s vote (or its withdrawal); resolves to null, or a sentence saying why it was not stored. */
  async function record(node, apiKey) {
    const stats = node.stats || {};
    if (!node.vote) return null; // a withdrawn vote: the server keeps the last one cast
    if (!stats.requestId) return "Vote kept in this browser only: the reply has no request id.";
    const body = { request_id: stats.requestId, vote: node.vote };
    try {
      await global.TYApi.postJson(VOTES_PATH, apiKey, body);
      return null;
    } catch (err) {
      return "Vote kept in this browser only: " + err.message;
    }
  }

  global.TYVotes = { record };
})(window);
