/** TEMPORARY: COMMON.md section 4 types until daemon/control/api.ts has them (branch cap-daemon). */
export interface CaptureCounters {
  seen: number;
  filteredOut: number;
  captured: number;
  dropped: number;
  bytes: number;
}
export interface CapturePointInfo {
  name: string;
  kind: 'port' | 'net' | 'exit' | 'drops';
  link: 'ether' | 'raw';
  description: string;
}
export interface CaptureSource {
  vm?: string;
  net?: string;
  point?: string[];
}
export interface CaptureInfo {
  id: string;
  kind: 'live' | 'tee';
  name?: string;
  points: string[];
  filter: string;
  snaplen: number;
  counters: CaptureCounters;
}
export interface CaptureStarted {
  id: string;
  points: string[];
}
export interface TeeInfo {
  name: string;
  from: CaptureSource;
  to: string;
  filter: string;
  snaplen: number;
  ring?: { files: number; sizeMb: number };
  state: 'active' | 'waiting' | 'error';
  detail: string;
  counters: CaptureCounters;
}
export interface TeeRemoved {
  removed: string;
}
