package io.sluice.flink.kinesis;

import java.net.URI;
import java.time.Duration;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.http.urlconnection.UrlConnectionHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.KinesisClientBuilder;

/** The one place a Kinesis client is built: region, endpoint override and credentials. */
final class KinesisClients {
    private KinesisClients() {}

    static KinesisClient create(KinesisSourceConfig config) {
        if (!config.cborEnabled) {
            System.setProperty("aws.cborEnabled", "false");
        }
        Duration timeout = Duration.ofMillis(config.httpTimeoutMillis);
        KinesisClientBuilder builder =
                KinesisClient.builder()
                        .httpClientBuilder(
                                UrlConnectionHttpClient.builder()
                                        .connectionTimeout(timeout)
                                        .socketTimeout(timeout));
        if (config.region != null) {
            builder.region(Region.of(config.region));
        }
        if (config.endpoint != null) {
            builder.endpointOverride(URI.create(config.endpoint));
        }
        if (config.accessKeyId != null) {
            builder.credentialsProvider(
                    StaticCredentialsProvider.create(
                            AwsBasicCredentials.create(
                                    config.accessKeyId, config.secretAccessKey)));
        } else {
            builder.credentialsProvider(DefaultCredentialsProvider.builder().build());
        }
        return builder.build();
    }
}
