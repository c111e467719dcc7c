export { unixConnectDriver } from './connect.js';
export { unixListenDriver } from './listen.js';
