/** JSON-RPC 2.0 shapes, one JSON object per line in each direction. */
export interface RpcRequest {
  jsonrpc: '2.0';
  id: number | string | null;
  method: string;
  params?: unknown;
}

export interface RpcError {
  code: number;
  message: string;
}

export type RpcResponse =
  | { jsonrpc: '2.0'; id: number | string | null; result: unknown }
  | { jsonrpc: '2.0'; id: number | string | null; error: RpcError };

export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
export const METHOD_NOT_FOUND = -32601;
export const INTERNAL_ERROR = -32603;
/** The daemon's own codes (INVALID_PARAMS, CONFLICT, NOT_FOUND): daemon/errors.ts, beside UserError. */
export { INVALID_PARAMS, CONFLICT, NOT_FOUND } from '../errors.js';

export type Handler = (params: unknown) => Promise<unknown>;
export type MethodTable = Record<string, Handler>;

/**
 * A method's answer after which the method takes the connection over (a capture streams pcapng on
 * it): the server writes `result` as the reply line, stops reading requests from the connection
 * (whatever the client pipelined after this request is discarded) and hands the socket to `take`.
 * `clientEnded`: the client had already half-closed its side. Not taken (the client went away
 * first): nothing is called.
 */
export class TakeOver {
  constructor(
    readonly result: unknown,
    readonly take: (sock: import('node:net').Socket, clientEnded: boolean) => void,
  ) {}
}
