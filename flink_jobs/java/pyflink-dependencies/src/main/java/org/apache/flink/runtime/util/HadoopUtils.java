package org.apache.flink.runtime.util;

import org.apache.hadoop.conf.Configuration;

/**
 * Stands in for Flink's own HadoopUtils inside pyflink-dependencies.jar (the shade plugin renames
 * it and every reference to it): Iceberg's Flink catalog factory asks it for a Hadoop
 * Configuration, and Flink's version looks for Hadoop on Flink's class path, where the local cluster
 * and MSF have none. Ours answers with an empty Configuration from this jar; catalog properties
 * (warehouse, catalog-impl, io-impl) come from the CREATE CATALOG statement instead.
 */
public final class HadoopUtils {
    private HadoopUtils() {}

    public static Configuration getHadoopConfiguration(
            org.apache.flink.configuration.Configuration flinkConfiguration) {
        return new Configuration(false);
    }
}
