/** Tor's state as text for people: shared by `tor status`, `route` and `status` (which need not load the tor commands). */
import { safeText } from '../text.js';
import type { TorSummary } from '../../daemon/control/api.js';

/** Why Tor is not ready, in tor's own words when it said something: the bootstrap problem, else its last warning or error. */
export function torReason(s: TorSummary): string | undefined {
  const p = s.bootstrapProblem;
  // Tor's words, quoted on one line wherever they are shown (status, progress, errors).
  if (p !== null) return safeText(`${p.warning}${p.reason !== null ? ` (${p.reason})` : ''} at ${p.progress}% (${p.summary})`);
  const w = s.warnings.at(-1) ?? s.lastError;
  return w === null ? undefined : safeText(w);
}

/** "bootstrapping 45% (Loading relay descriptors)" or "down (stopped …)". */
export function torPhaseText(s: TorSummary): string {
  const text = s.phase === 'bootstrapping' || s.phase === 'starting' ? `${s.phase} ${s.progress}%${s.summary ? ` (${s.summary})` : ''}` : `${s.phase}${s.summary && s.phase !== 'ready' ? ` (${s.summary})` : ''}`;
  return safeText(text);
}

/** `mvnet status`'s Tor line: phase and bootstrap, and tor's reason while it is not ready. */
export function torStatusLine(s: TorSummary): string {
  const why = s.phase !== 'ready' ? torReason(s) : undefined;
  return safeText(`Tor (${s.mode}): ${torPhaseText(s)}${why !== undefined ? `; tor says: ${why}` : ''}`);
}
