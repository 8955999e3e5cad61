import * as blauth from "./index.js";
export * from "./index.js";
declare const _default: {
  token: typeof blauth.token;
  watch: typeof blauth.watch;
  useBlauth: typeof blauth.useBlauth;
  socketPath: typeof blauth.socketPath;
  BlauthError: typeof blauth.BlauthError;
  Watch: typeof blauth.Watch;
  BlauthCredentials: typeof blauth.BlauthCredentials;
};
export default _default;
