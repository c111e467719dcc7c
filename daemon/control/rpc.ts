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
export const INVALID_PARAMS = -32602;
export const INTERNAL_ERROR = -32603;
/** A request that is valid but conflicts with the current state (in use, exists, attached). */
export const CONFLICT = -32001;

export type Handler = (params: unknown) => Promise<unknown>;
export type MethodTable = Record<string, Handler>;
