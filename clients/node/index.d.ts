// Types of blauth (hand-written; the implementation is index.js).
import { EventEmitter } from "node:events";

/** A token served by blauthd. */
export interface Token {
  /** The bearer token: a JWT for service accounts and bl login sessions, the key for an API key. */
  readonly token: string;
  /** The workspace it is for: send it as X-Blaxel-Workspace. */
  readonly workspace: string;
  /** When it expires; null for an API key, which does not. */
  readonly expiry: Date | null;
  /** "api_key", "client_credentials" or "login". */
  readonly kind: string;
  /** Where the daemon found the credential, KIND:WHERE, e.g. "bl_config:/home/me/.blaxel/config.yaml". */
  readonly source: string;
  /** Something the user should know although the token is good; "" when none. Show it, do not parse it. */
  readonly hint: string;
}

/** What selects the credential, as for Blaxel's SDKs. */
export interface RequestOptions {
  /** The workspace; by default the daemon picks the caller's BL_WORKSPACE, then the bl config's. */
  workspace?: string;
  /** Seconds of life the token must still have (the daemon's own minimum, 30 s by default, always applies). */
  minTTL?: number;
  /** The daemon's socket; by default the same rule as blauthd's ($BLAUTH_SOCKET first). */
  socket?: string;
  /** The directory whose .env counts (absolute); process.cwd() by default, null to send none. */
  cwd?: string | null;
  /** The variables whose BL_* entries are sent as the caller's environment; process.env by default. */
  env?: Record<string, string | undefined>;
}

export interface TokenOptions extends RequestOptions {
  /** How long to wait for the answer, in ms (35000). */
  timeoutMs?: number;
}

/** One token now. Rejects with a BlauthError. */
export function token(opts?: TokenOptions): Promise<Token>;

export interface WaitOptions {
  /** How long to wait, in ms (30000). */
  timeoutMs?: number;
}

export interface FreshOptions extends WaitOptions {
  /** Seconds of life the token must have left (the watch's minTTL, else 30). */
  minTTL?: number;
}

/** A watch: the current token and every new one, reconnecting after a daemon restart. */
export class Watch extends EventEmitter implements AsyncIterable<Token> {
  private constructor();
  /** The latest token, or null when none is held, it expired, or the daemon can serve none now. */
  current(): Token | null;
  /** The current token, or the first one to come. */
  ready(opts?: WaitOptions): Promise<Token>;
  /** A token with more than minTTL seconds left: the current one or the next one. */
  fresh(opts?: FreshOptions): Promise<Token>;
  /** Ends the watch, its reconnects, its waits and its loops. */
  close(): void;
  /** The workspace of the latest answer, or the one asked for. */
  readonly workspace: string;
  /** The latest problem not yet followed by a token. */
  readonly lastError: BlauthError | null;
  readonly closed: boolean;
  [Symbol.asyncIterator](): AsyncIterator<Token>;

  on(event: "token", listener: (token: Token) => void): this;
  on(event: "error", listener: (err: BlauthError) => void): this;
  on(event: "close", listener: () => void): this;
  once(event: "token", listener: (token: Token) => void): this;
  once(event: "error", listener: (err: BlauthError) => void): this;
  once(event: "close", listener: () => void): this;
}

/** Starts a watch. Throws a BlauthError (code bad_request) on bad options. */
export function watch(opts?: RequestOptions): Watch;

/** The credentials object useBlauth puts in @blaxel/core's settings.credentials. */
export class BlauthCredentials {
  private constructor();
  authenticate(): Promise<void>;
  readonly workspace: string;
  readonly authorization: string;
  readonly token: string;
}

export interface UseBlauthOptions {
  workspace?: string;
  /** Seconds of life a token must have for a request to use it (30). */
  minTTL?: number;
  socket?: string;
  cwd?: string | null;
  env?: Record<string, string | undefined>;
  /** The settings export of @blaxel/core; by default the caller's, found as Node would. */
  settings?: object;
  /** How long the first token, and a request waiting for a fresh one, may take, in ms (30000). */
  timeoutMs?: number;
}

export interface BlauthHandle {
  /** The latest token, as Watch.current(). */
  current(): Token | null;
  /** Ends the watch so that the process can exit. Restores nothing. */
  close(): void;
  readonly credentials: BlauthCredentials;
  readonly watcher: Watch;
}

/** Makes the Blaxel TypeScript SDK take its tokens from blauthd. */
export function useBlauth(opts?: UseBlauthOptions): Promise<BlauthHandle>;

/** Where blauthd listens, by its rule. */
export function socketPath(env?: Record<string, string | undefined>): string;

/**
 * Every error of this library. Branch on code: a protocol code (no_workspace, no_credentials,
 * auth_failed, unavailable, bad_request, forbidden, shutting_down, busy, internal, …) or one of
 * the client's own: unreachable, timeout, bad_answer, closed, sdk_not_found.
 */
export class BlauthError extends Error {
  constructor(code: string, message: string, hint?: string, options?: { cause?: unknown });
  readonly code: string;
  readonly hint: string;
}
